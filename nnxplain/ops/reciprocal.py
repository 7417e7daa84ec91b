"""Reciprocal, 1 / x: -dy * y^2.

A pointwise activation: relevance passes through it. 1 / 0 = inf, so it does not preserve zeros;
1 / x >= 0 exactly where x >= 0 (1 / +0 = +inf).
"""
from __future__ import annotations

from . import IF_INPUT, op


@op("Reciprocal", "activation", pointwise=True, nonnegative=IF_INPUT)
def reciprocal(e, node, dy):
    y = node.outputs[0]
    return [e.Neg(e.Mul(dy, e.Mul(y, y)))]
