"""Tanh: dy * (1 - y^2)."""
from __future__ import annotations

from . import op


@op("Tanh", "activation", pointwise=True, zero_preserving=True)
def tanh(e, node, dy):
    y = node.outputs[0]
    return [e.Mul(dy, e.Sub(1.0, e.Mul(y, y)))]
