"""MatMul (N-D, broadcasting batch dims): dA = dY @ B^T, dB = A^T @ dY, each reduced to its operand's shape."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..emitter import shape
from . import Linear, linear_op


def _swap_last(e, t):
    """t with its last two axes swapped: a constant of its own when t is a constant (computed when
    the graph is compiled, so the backward pass reads no weight that the forward pass reads)."""
    if isinstance(t, gs.Constant):
        return e.const(np.swapaxes(t.values, -1, -2))
    rank = len(shape(t))
    return e.Transpose(t, perm=list(range(rank - 2)) + [rank - 1, rank - 2])


def forward(e, node, x, w, b):
    y = e.MatMul(x, w)
    return y if b is None else e.Add(y, b)


def transpose(e, node, dy, w):
    return e.MatMul(dy, _swap_last(e, w))


def matmul_linear(node):
    if not isinstance(node.inputs[1], gs.Constant) or len(node.inputs[1].values.shape) != 2:
        return None
    return Linear(x=0, weight=1, bias=None, forward=forward, transpose=transpose)


def matmul_vjp(e, node, dy):
    a, b = node.inputs
    y = node.outputs[0]
    if len(shape(a)) < 2 or len(shape(b)) < 2:
        raise ValueError("MatMul with a 1-D operand has no adapter yet")
    batch = shape(y)[:-2]  # the broadcast batch dims; the last two are the matrix dims
    da = e.unbroadcast(e.MatMul(dy, _swap_last(e, b)), a, batch + shape(a)[-2:])
    db = e.unbroadcast(e.MatMul(_swap_last(e, a), dy), b, batch + shape(b)[-2:])
    return [da, db]


# MatMul is bilinear (and broadcasts batch dims): its gradient reaches both operands, so it keeps its own vjp.
linear_op("MatMul", matmul_linear, vjp=matmul_vjp, groups=("linear",))
