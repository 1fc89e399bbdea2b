"""The engine: ``check()``, one check's pipeline (``pipeline.py``) and the scheduler of checks
(``schedule.py``). Works in a plain script and never touches a pytest object.
See docs/architecture.md.
"""
