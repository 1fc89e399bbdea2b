"""The eager reference: how the model runs when served and its state put back between calls
(``eager.py``), outputs compared (``compare.py``) and the float64 oracle that tells rounding
from a defect (``noise.py``).
"""
