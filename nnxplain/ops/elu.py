"""Elu, x for x > 0 and alpha (e^x - 1) elsewhere: dy, or dy * alpha e^x.

Its own record, not its ONNX function body (a Where over x < 0 of alpha * (Exp(x) - 1) and x): expanded,
LRP would see a Where and an Exp instead of one activation that relevance passes through.
"""
from __future__ import annotations

from . import op


@op("Elu", "activation", pointwise=True, zero_preserving=True)
def elu(e, node, dy):
    x = node.inputs[0]
    alpha = float(node.attrs.get("alpha", 1.0))
    # alpha e^x rather than y + alpha: exact where e^x is far below 1; min(x, 0) keeps the unused branch finite
    slope = e.Mul(e.Exp(e.Min(x, 0.0)), alpha)
    return [e.Where(e.Greater(x, 0.0), dy, e.Mul(dy, slope))]
