"""Gemm: Y = alpha * op(A) @ op(B) + beta * C."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from . import Linear, linear_op


def forward(e, node, x, w, b):
    return e.Gemm(x, w, b, **node.attrs)


def transpose(e, node, dy, w):
    """dA for Y = alpha * op(A) @ op(W)."""
    alpha = node.attrs.get("alpha", 1.0)
    trans_a, trans_b = node.attrs.get("transA", 0), node.attrs.get("transB", 0)
    if not trans_a:
        return e.Gemm(dy, w, alpha=alpha, transB=1 - trans_b)
    return e.Gemm(w, dy, alpha=alpha, transA=trans_b, transB=1)


def _grad_b(e, node, dy, a):
    alpha = node.attrs.get("alpha", 1.0)
    trans_a, trans_b = node.attrs.get("transA", 0), node.attrs.get("transB", 0)
    if not trans_b:
        return e.Gemm(a, dy, alpha=alpha, transA=1 - trans_a)
    return e.Gemm(dy, a, alpha=alpha, transA=1, transB=trans_a)


def gemm_linear(node):
    if not isinstance(node.inputs[1], gs.Constant):
        return None
    return Linear(x=0, weight=1, bias=2 if len(node.inputs) > 2 else None, forward=forward, transpose=transpose)


def gemm_vjp(e, node, dy):
    a, b = node.inputs[:2]
    grads = [transpose(e, node, dy, b), _grad_b(e, node, dy, a)]
    if len(node.inputs) > 2 and node.inputs[2].name:
        c = node.inputs[2]
        grads.append(e.unbroadcast(e.Mul(dy, float(node.attrs.get("beta", 1.0))), c, node.outputs[0]))
    return grads


# Gemm is bilinear: with a computed B its gradient reaches B too, so it keeps its own vjp.
linear_op("Gemm", gemm_linear, vjp=gemm_vjp, groups=("linear",))
