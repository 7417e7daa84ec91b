"""Softmax along any axis (opset 13 semantics; older models are converted to opset 17 when loaded):
dx = y * (dy - sum(dy * y)) along the axis, read off the node's own output y. Not pointwise (each
output reads the whole axis), so category "nonlinear": gradient methods apply, LRP methods refuse
it. A Softmax that produces a graph output is removed before (strip_output_softmax)."""
from __future__ import annotations

from . import ALWAYS, op


@op("Softmax", "nonlinear", nonnegative=ALWAYS)
def softmax(e, node, dy):
    y = node.outputs[0]
    dot = e.ReduceSum(e.Mul(dy, y), e.ints([node.attrs.get("axis", -1)]), keepdims=1)
    return [e.Mul(y, e.Sub(dy, dot))]
