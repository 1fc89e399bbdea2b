"""The engine's entry points: ``check()`` and one check's pipeline of stages (``pipeline.py``),
and the one scheduler of checks that ``check()``, the fixture and the plugin share
(``schedule.py``). Works in a plain script; never touches a pytest object.
"""
