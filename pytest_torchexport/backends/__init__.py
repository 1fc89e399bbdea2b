"""Export backends: one module each, behind the ``Backend`` protocol in ``base.py``."""
