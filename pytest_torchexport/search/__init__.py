"""The input search (``search.py``) and what it says about a failure: the shrunk failure
(``failure.py``), the cause experiments (``causes.py``), the first diverging module, found on
both sides of the walk (``localize.py``), the message in words, from the likely cause to the
file as shipped (``messages.py``), and its repro file (``repro.py``).
"""
