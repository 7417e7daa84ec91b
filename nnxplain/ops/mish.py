"""Mish (opset 18), x tanh(softplus(x)): dy * (t + x (1 - t^2) sigmoid(x)) with t = tanh(softplus(x)).

Its own record, not its ONNX function body (Mul(x, Tanh(Softplus(x)))): expanded, LRP would see a Mul
of two computed tensors, which the z-rule refuses (it needs a constant operand), not one activation
that relevance passes through.
"""
from __future__ import annotations

from . import op


@op("Mish", "activation", pointwise=True, zero_preserving=True)
def mish(e, node, dy):
    x = node.inputs[0]
    t = e.Tanh(e.Softplus(x))
    slope = e.Add(t, e.Mul(e.Mul(x, e.Sub(1.0, e.Mul(t, t))), e.Sigmoid(x)))
    return [e.Mul(dy, slope)]
