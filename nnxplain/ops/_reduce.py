"""What the reductions' gradients share: the gradient is broadcast back over the reduced axes."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from ..emitter import shape


def _axes(node):
    if "axes" in node.attrs:
        return list(node.attrs["axes"])
    if len(node.inputs) > 1 and node.inputs[1].name:
        if not isinstance(node.inputs[1], gs.Constant):
            raise ValueError("reduction axes computed at run time are not supported")
        return [int(a) for a in node.inputs[1].values.reshape(-1)]
    return []


def _keepdims_grad(e, node, dy):
    x = node.inputs[0]
    rank = len(shape(x))
    axes = _axes(node)
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            return None
        axes = list(range(rank))
    if not node.attrs.get("keepdims", 1):
        dy = e.Unsqueeze(dy, e.ints(sorted(a % rank for a in axes)))
    return dy


def reduction(spread):
    """The adapter of a reduction whose gradient, with the reduced axes kept, is spread(e, g, x, y)."""
    def reduction_vjp(e, node, dy):
        g = _keepdims_grad(e, node, dy)
        dx = dy if g is None else spread(e, g, node.inputs[0], node.outputs[0])
        return [dx] + [None] * (len(node.inputs) - 1)
    return reduction_vjp
