"""Neg: -dy.

A pointwise activation (category "activation"), though linear: for y = -x the z-rule gives
R_x = x * (-1) * R / y = R, which is what passing relevance through does, and DeepLIFT's rescale
multiplier (y - y_ref) / (x - x_ref) is its gradient, -1. Neg(0) = 0; its output has no known sign.
"""
from __future__ import annotations

from . import op


@op("Neg", "activation", pointwise=True, zero_preserving=True)
def neg(e, node, dy):
    return [e.Neg(dy)]
