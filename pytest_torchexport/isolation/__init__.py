"""Where a check runs: a forked child with a time limit, how many checks fit here and the one
record of what belongs to the OS process (``runner.py``); the fresh interpreter that loads
saved artifacts standalone (``loader.py``); what the parent pays before a fork so that its
children need not (``warmup.py``).
"""
