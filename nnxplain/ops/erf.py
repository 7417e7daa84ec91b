"""Erf: dy * 2 / sqrt(pi) * e^(-x^2).

A pointwise activation (GELU's exact form is x * (1 + erf(x / sqrt 2)) / 2, and older exports write it
out so): relevance passes through it. erf(0) = 0, and erf(x) >= 0 exactly where x >= 0.
"""
from __future__ import annotations

import math

from . import IF_INPUT, op


@op("Erf", "activation", pointwise=True, zero_preserving=True, nonnegative=IF_INPUT)
def erf(e, node, dy):
    x = node.inputs[0]
    return [e.Mul(dy, e.Mul(e.Exp(e.Neg(e.Mul(x, x))), 2.0 / math.sqrt(math.pi)))]
