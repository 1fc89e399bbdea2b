"""[Verdict Cache] The files a verdict rests on (``sources.py``), the key of everything else
(``fingerprint.py``), the entries on disk (``store.py``) and one check's lookup and keep
(``reuse.py``).
"""
