"""Celu, max(0, x) + min(0, alpha (e^(x / alpha) - 1)): dy where x > 0, dy * e^(x / alpha) elsewhere
(1 at x = 0 either way).

Its own record, not its ONNX function body (Elu of x / alpha, scaled back): expanded, LRP would see a
Div and a Mul around the Elu, two more nodes relevance has to cross for one activation. celu(0) = 0;
its output has the sign of x.
"""
from __future__ import annotations

from . import IF_INPUT, op


@op("Celu", "activation", pointwise=True, zero_preserving=True, nonnegative=IF_INPUT)
def celu(e, node, dy):
    x = node.inputs[0]
    alpha = float(node.attrs.get("alpha", 1.0))
    slope = e.Exp(e.Div(e.Min(x, 0.0), alpha))  # min(x, 0) keeps the unused branch finite
    return [e.Where(e.Greater(x, 0.0), dy, e.Mul(dy, slope))]
