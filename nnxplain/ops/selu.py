"""Selu, gamma x for x > 0 and gamma alpha (e^x - 1) elsewhere: dy * gamma, or dy * gamma alpha e^x
(gamma alpha at x = 0, as torch's).

Its own record, not its ONNX function body (a Where over x <= 0 of two computed branches): expanded,
LRP would see a Where and an Exp instead of one activation that relevance passes through. selu(0) = 0;
its output has the sign of x.
"""
from __future__ import annotations

from . import IF_INPUT, op

ALPHA, GAMMA = 1.67326319217681884765625, 1.05070102214813232421875  # the ONNX defaults


@op("Selu", "activation", pointwise=True, zero_preserving=True, nonnegative=IF_INPUT)
def selu(e, node, dy):
    x = node.inputs[0]
    alpha, gamma = float(node.attrs.get("alpha", ALPHA)), float(node.attrs.get("gamma", GAMMA))
    slope = e.Mul(e.Exp(e.Min(x, 0.0)), alpha * gamma)  # min(x, 0) keeps the unused branch finite
    return [e.Where(e.Greater(x, 0.0), e.Mul(dy, gamma), e.Mul(dy, slope))]
