"""Abs: dy * sign(x), 0 at x = 0 (as torch's).

A pointwise activation: relevance passes through it. |0| = 0 and |x| >= 0.
"""
from __future__ import annotations

from . import ALWAYS, op


@op("Abs", "activation", pointwise=True, zero_preserving=True, nonnegative=ALWAYS)
def abs_(e, node, dy):
    return [e.Mul(dy, e.Sign(node.inputs[0]))]
