"""pytest glue under ``plugin.py``'s hooks: session state, markers to options and items,
the item-to-engine adapters, checks started ahead of their items, rows mapped to pytest
outcomes, the end-of-session summary and report, xdist.
"""
