"""Sigmoid: dy * y (1 - y)."""
from __future__ import annotations

from . import ALWAYS, op


@op("Sigmoid", "activation", pointwise=True, nonnegative=ALWAYS)
def sigmoid(e, node, dy):
    y = node.outputs[0]
    return [e.Mul(dy, e.Mul(y, e.Sub(1.0, y)))]
