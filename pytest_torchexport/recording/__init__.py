"""From a test body to a check: the calls a test makes, recorded (``recorder.py``), and
the call chosen and its check planned (``selection.py``). No pytest objects.
"""
