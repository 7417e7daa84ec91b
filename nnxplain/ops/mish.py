"""Mish (opset 18), x tanh(s) with s = softplus(x): dy * (tanh(s) + x sigmoid(x) / cosh(s)^2).

Its own record, not its ONNX function body (Mul(x, Tanh(Softplus(x)))): expanded, LRP would see a Mul
of two computed tensors, which the z-rule refuses (it needs a constant operand), not one activation
that relevance passes through.
"""
from __future__ import annotations

from . import op


@op("Mish", "activation", pointwise=True, zero_preserving=True)
def mish(e, node, dy):
    x = node.inputs[0]
    s = e.Softplus(x)
    cosh = e.Cosh(s)  # 1 / cosh(s)^2 rather than 1 - tanh(s)^2, which cancels to nothing where tanh(s) ~ 1
    slope = e.Add(e.Tanh(s), e.Div(e.Mul(x, e.Sigmoid(x)), e.Mul(cosh, cosh)))
    return [e.Mul(dy, slope)]
