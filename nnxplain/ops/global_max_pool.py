"""GlobalMaxPool: the gradient goes to each channel's (first) maximum."""
from __future__ import annotations

from ..emitter import static_dims
from . import IF_INPUT, op
from .max_pool import scatter_to_winners


@op("GlobalMaxPool", "routing", nonnegative=IF_INPUT, groups=("pooling",))
def global_max_pool(e, node, dy):
    x = node.inputs[0]
    return [scatter_to_winners(e, x, dy, kernel_shape=static_dims(x, "GlobalMaxPool's gradient", 2))]
