"""Inputs: what may vary (``specs.py``) and the hypothesis strategies that draw from it (``strategies.py``)."""
