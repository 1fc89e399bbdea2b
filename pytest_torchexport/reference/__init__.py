"""The eager reference: how the model runs when served (``eager.py``), its state put back
between calls (``stateful.py``), outputs compared (``compare.py``) and the float64 oracle
that tells rounding from a defect (``noise.py``).
"""
