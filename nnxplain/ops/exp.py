"""Exp: dy * y.

A pointwise activation: relevance passes through it. e^0 = 1, so it does not preserve zeros; its
output is always positive.
"""
from __future__ import annotations

from . import ALWAYS, op


@op("Exp", "activation", pointwise=True, nonnegative=ALWAYS)
def exp(e, node, dy):
    return [e.Mul(dy, node.outputs[0])]
