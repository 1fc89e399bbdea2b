"""The pytest side of the plugin, under ``plugin.py``'s hooks: session state, markers and
items, the adapters to the engine, and the end-of-session summary. See docs/architecture.md.
"""
