"""Sqrt: dy / (2 y) (infinite at x = 0, as torch's).

A pointwise activation: relevance passes through it. sqrt(0) = 0, and its output is never negative.
"""
from __future__ import annotations

from . import ALWAYS, op


@op("Sqrt", "activation", pointwise=True, zero_preserving=True, nonnegative=ALWAYS)
def sqrt(e, node, dy):
    return [e.Div(dy, e.Mul(node.outputs[0], 2.0))]
