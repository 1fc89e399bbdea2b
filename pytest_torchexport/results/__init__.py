"""Results: the report row (``Result``, ``Finding``, ``Status``), the one writer of a verdict
(``outcome.py``), findings read from exporters' words (``explain.py``), and what reads
rows back (``baseline.py``, ``merge.py``). Pure data and text; no torch at import.
"""
