"""GlobalMaxPool: the gradient goes to each channel's (first) maximum."""
from __future__ import annotations

import numpy as np

from ..emitter import static_dims
from . import IF_INPUT, op
from .max_pool import scatter_to_winners


@op("GlobalMaxPool", "routing", nonnegative=IF_INPUT, groups=("pooling",))
def global_max_pool(e, node, dy):
    x = node.inputs[0]
    if x.shape is not None and all(isinstance(d, (int, np.integer)) for d in x.shape[2:]):
        return [scatter_to_winners(e, x, dy, kernel_shape=static_dims(x, "GlobalMaxPool's gradient", 2))]
    # spatial dims known at run time only: each channel's first maximum by ArgMax over its flattened map
    flat = e.Reshape(x, e.ints([0, 0, -1]))
    winners = e.ArgMax(flat, axis=2, keepdims=1)
    dx = e.ScatterElements(e.zeros_like(flat), winners, e.Reshape(dy, e.ints([0, 0, 1])), axis=2)
    return [e.reshape_like(dx, x)]
