"""Dropout (inference): its output is its input, so the gradient passes unchanged."""
from __future__ import annotations

from . import IF_INPUT, op
from .identity import pass_through

op("Dropout", "routing", pointwise=True, zero_preserving=True, nonnegative=IF_INPUT)(pass_through)
