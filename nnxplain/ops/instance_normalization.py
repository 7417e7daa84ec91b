"""InstanceNormalization: x [N, C, D1, ...] is standardized over the spatial axes of each sample and
channel, then scaled and shifted per channel. Category "nonlinear", like LayerNormalization (see
its record); the per-channel scale and bias must be constants (they are weights)."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..emitter import FLOAT, shape
from . import op
from ._normalize import standardized, standardized_vjp


def per_channel(node, what: str, rank: int) -> np.ndarray:
    """The node's constant scale as [C, 1, ..., 1], to broadcast over x [N, C, D1, ...]."""
    scale = node.inputs[1]
    if not isinstance(scale, gs.Constant):
        raise ValueError(f"{what} needs a constant scale, found the computed '{scale.name}'")
    values = scale.values.astype(FLOAT)
    return values.reshape([-1] + [1] * (rank - 2))


@op("InstanceNormalization", "nonlinear")
def instance_normalization(e, node, dy):
    x = node.inputs[0]
    rank = len(shape(x))
    if not isinstance(node.inputs[2], gs.Constant):
        raise ValueError(f"InstanceNormalization needs a constant bias, found the computed '{node.inputs[2].name}'")
    scale = per_channel(node, "InstanceNormalization", rank)
    axes = list(range(2, rank))
    xhat, r = standardized(e, x, axes, node.attrs.get("epsilon", 1e-5))
    return [standardized_vjp(e, e.Mul(dy, scale), xhat, r, axes), None, None]
