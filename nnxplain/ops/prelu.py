"""PRelu, x where x >= 0 and slope * x elsewhere (the slope broadcast to x, e.g. one per channel): dy
where x > 0, dy * slope elsewhere (slope at x = 0, as torch's).

A pointwise activation of its first input: relevance passes through it to x. The slope is a weight
(a constant in the models exporters write) and gets no gradient; a computed slope gets its own,
dy * x where x < 0, summed back to the slope's shape. PRelu(0) = 0, and its output is >= 0 where its
input is.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from . import IF_INPUT, op


@op("PRelu", "activation", pointwise=True, zero_preserving=True, nonnegative=IF_INPUT)
def prelu(e, node, dy):
    x, slope = node.inputs
    y = node.outputs[0]
    positive = e.Greater(x, 0.0)
    dx = e.Where(positive, dy, e.Mul(dy, slope))
    dslope = None if isinstance(slope, gs.Constant) else e.unbroadcast(e.Where(positive, 0.0, e.Mul(dy, x)), slope, y)
    return [dx, dslope]
