"""Squeeze: the gradient is reshaped back to the input's shape."""
from __future__ import annotations

from . import IF_INPUT, op
from .reshape import reshape_back

op("Squeeze", "routing", nonnegative=IF_INPUT)(reshape_back)
