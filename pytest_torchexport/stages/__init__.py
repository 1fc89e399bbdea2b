"""The stages of one (backend, device) check, in order, and the ``Check`` they share
(``check.py``): the eager prelude and its budget, export, standalone load, side effects,
undeclared sizes, latency, kept artifacts. ``docs/architecture.md`` has the table.
"""
