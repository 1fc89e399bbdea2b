"""Where a check runs: a forked child with a time limit (``runner.py``) and the fresh
interpreter that loads saved artifacts standalone (``loader.py``); what the parent pays
before a fork so that its children need not (``warmup.py``), how many checks fit here
(``sizing.py``), and the one record of what belongs to the OS process (``process.py``).
"""
