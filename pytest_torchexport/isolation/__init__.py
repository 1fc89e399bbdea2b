"""Where a check runs: a forked child with a time limit (``runner.py``) and the fresh
interpreter that loads saved artifacts standalone (``loader.py``).
"""
