"""The input search (``search.py``) and what it says about a failure: the shrunk failure
(``failure.py``), the cause experiments (``causes.py``), the first diverging module
(``localize.py``), the message (``messages.py``) and its repro file (``repro.py``).
"""
