"""HardSwish, x * max(0, min(1, x / 6 + 1/2)): dy * 0 for x <= -3, dy * (x / 3 + 1/2) for -3 < x < 3,
dy for x >= 3 (torch's hardswish gradient, at the corners too).

Its own record, not its ONNX function body (Mul(x, HardSigmoid(x))): expanded, LRP would see a Mul of
two computed tensors, which the z-rule refuses, not one activation that relevance passes through.
hardswish(0) = 0; its output dips below 0 (to -3/8) for x < 0, and is >= 0 where x is.
"""
from __future__ import annotations

from . import IF_INPUT, op


@op("HardSwish", "activation", pointwise=True, zero_preserving=True, nonnegative=IF_INPUT)
def hard_swish(e, node, dy):
    x = node.inputs[0]
    middle = e.Add(e.Div(x, 3.0), 0.5)
    slope = e.Where(e.LessOrEqual(x, -3.0), 0.0, e.Where(e.GreaterOrEqual(x, 3.0), 1.0, middle))
    return [e.Mul(dy, slope)]
