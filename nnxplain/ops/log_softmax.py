"""LogSoftmax along any axis (opset 13 semantics): dx = dy - softmax(x) * sum(dy) along the axis,
softmax(x) = exp(y) read off the node's own output. Category "nonlinear", like Softmax."""
from __future__ import annotations

from . import op


@op("LogSoftmax", "nonlinear")
def log_softmax(e, node, dy):
    y = node.outputs[0]
    total = e.ReduceSum(dy, e.ints([node.attrs.get("axis", -1)]), keepdims=1)
    return [e.Sub(dy, e.Mul(e.Exp(y), total))]
