"""Where a check runs: forked children with time limits (``runner.py``), the standalone loader
(``loader.py``), first uses paid before forking (``warmup.py``) and the C++ runner (``cpp.py``).
"""
