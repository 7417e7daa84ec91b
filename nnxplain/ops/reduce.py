"""ReduceMean (and ReduceSum): the gradient is broadcast back over the reduced axes."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from ..emitter import shape
from . import vjp
from .avgpool import spread_mean


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


@vjp("ReduceMean")
def reduce_mean(e, node, dy):
    x = node.inputs[0]
    g = _keepdims_grad(e, node, dy)
    if g is None:
        return [dy, None]
    return [spread_mean(e, g, x, node.outputs[0]), None][:len(node.inputs)]


@vjp("ReduceSum")
def reduce_sum(e, node, dy):
    x = node.inputs[0]
    g = _keepdims_grad(e, node, dy)
    if g is None:
        return [dy, None]
    return [e.Expand(g, e.shape_of(x)), None][:len(node.inputs)]
