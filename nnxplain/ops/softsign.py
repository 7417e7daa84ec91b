"""Softsign, x / (1 + |x|): dy / (1 + |x|)^2.

Its own record, not its ONNX function body (Div(x, Add(Abs(x), 1))): expanded, LRP would see a Div of
two computed tensors, which the z-rule refuses, not one activation that relevance passes through.
softsign(0) = 0 and it has the sign of x.
"""
from __future__ import annotations

from . import IF_INPUT, op


@op("Softsign", "activation", pointwise=True, zero_preserving=True, nonnegative=IF_INPUT)
def softsign(e, node, dy):
    d = e.Add(e.Abs(node.inputs[0]), 1.0)
    return [e.Div(dy, e.Mul(d, d))]
