"""MaxPool: the gradient goes to the window's (first) maximum.

The winners come from MaxPool's Indices output (flat over N*C*spatial, padding ignored) and the
gradient is scattered there with ScatterElements(reduction="add"), which is exact for overlapping
windows and for ties (all-zero windows after a ReLU), where an equality mask would not be.
"""
from __future__ import annotations

import numpy as np

from ..emitter import FLOAT
from . import IF_INPUT, op


def scatter_to_winners(e, x, dy, **pool_attrs):
    _, indices = e.op("MaxPool", x, outputs=2, **pool_attrs)
    flat = e.ints([-1])
    size = e.Reshape(e.Size(x), flat)
    zeros = e.ConstantOfShape(size, value=np.zeros(1, FLOAT))
    dx = e.ScatterElements(zeros, e.Reshape(indices, flat), e.Reshape(dy, flat), axis=0, reduction="add")
    return e.reshape_like(dx, x)


@op("MaxPool", "routing", nonnegative=IF_INPUT, groups=("pooling",))
def max_pool(e, node, dy, d_indices=None):
    if dy is None:
        return [None]
    attrs = {k: v for k, v in node.attrs.items() if k != "storage_order"}
    return [scatter_to_winners(e, node.inputs[0], dy, **attrs)]
