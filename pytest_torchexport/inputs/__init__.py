"""Inputs: the declaration of what may vary (``specs.py``: ``Dim``, ``TensorSpec``, the
``InputPlan``) and the hypothesis strategies that draw from it (``strategies.py``).
"""
