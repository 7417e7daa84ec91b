"""LayerNormalization (any axis, scale and optional bias, epsilon): x is standardized over the axes
from `axis` on, then scaled and shifted. Not pointwise (each output reads its whole row), so a
record of its own in category "nonlinear": gradient methods apply, LRP methods refuse it until a
propagation rule names the op. Only output 0 carries a gradient; the optional Mean and InvStdDev
outputs are statistics a model does not differentiate through."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from ..emitter import shape
from . import op
from ._normalize import standardized, standardized_vjp


@op("LayerNormalization", "nonlinear")
def layer_normalization(e, node, dy, d_mean=None, d_inv_std=None):
    x, scale = node.inputs[:2]
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    if dy is None:
        return [None] * len(node.inputs)
    y = node.outputs[0]
    rank = len(shape(x))
    axes = list(range(node.attrs.get("axis", -1) % rank, rank))
    xhat, r = standardized(e, x, axes, node.attrs.get("epsilon", 1e-5))
    dx = standardized_vjp(e, e.Mul(dy, scale), xhat, r, axes)
    # a computed scale or bias (rare: they are weights) gets its gradient too
    d_scale = None if isinstance(scale, gs.Constant) else e.unbroadcast(e.Mul(dy, xhat), scale, y)
    d_bias = None if bias is None or isinstance(bias, gs.Constant) else e.unbroadcast(dy, bias, y)
    return [dx, d_scale, d_bias][:len(node.inputs)]
