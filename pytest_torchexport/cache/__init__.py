"""[Verdict Cache] The verdict cache: the files a verdict rests on (``sources.py``), the key
(``fingerprint.py``), the entries on disk (``store.py``) and one check's lookup (``reuse.py``).
See docs/howto-cache.md.
"""
