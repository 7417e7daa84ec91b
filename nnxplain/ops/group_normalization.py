"""GroupNormalization: the channels of x [N, C, D1, ...] are split into num_groups groups, each
sample's group standardized over its channels and positions, then scaled and shifted per channel
(opset 21; the onnx checker refuses opset 18's version, deprecated for giving them per group).
Category "nonlinear", like LayerNormalization (see its record); the scale and bias must be
constants (they are weights).

onnx 1.23's shape inference gives the op's output no type, so nnxplain's load refuses a model that
holds one today; tests/test_ops_structural.py checks this gradient through the record itself."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from ..emitter import shape
from . import op
from ._normalize import standardized, standardized_vjp
from .instance_normalization import per_channel


@op("GroupNormalization", "nonlinear")
def group_normalization(e, node, dy):
    x = node.inputs[0]
    rank = len(shape(x))
    groups = node.attrs["num_groups"]
    if not isinstance(node.inputs[2], gs.Constant):
        raise ValueError(f"GroupNormalization needs a constant bias, found the computed '{node.inputs[2].name}'")
    scale = per_channel(node, "GroupNormalization", rank)
    grouped = e.ints([0, groups, -1])  # [N, G, C/G * D1 * ...]: each group's elements along one axis
    xhat, r = standardized(e, e.Reshape(x, grouped), [2], node.attrs.get("epsilon", 1e-5))
    dx = standardized_vjp(e, e.Reshape(e.Mul(dy, scale), grouped), xhat, r, [2])
    return [e.reshape_like(dx, x), None, None]
