"""GlobalAveragePool: each output's gradient is spread evenly over its channel's positions."""
from __future__ import annotations

import numpy as np

from . import IF_INPUT, op


@op("GlobalAveragePool", "proportional", nonnegative=IF_INPUT, groups=("pooling",))
def global_average_pool(e, node, dy):
    x, y = node.inputs[0], node.outputs[0]
    return [spread_mean(e, dy, x, y)]


def spread_mean(e, dy, x, y):
    """Gradient of a mean: dy broadcast over the reduced elements, divided by their number (on an
    empty batch both sizes are 0: the divisor is then 1, it divides nothing)."""
    count = e.Cast(e.Div(e.Size(x), e.Max(e.Size(y), e.const(np.array(1, np.int64)))), to=1)  # 1 = FLOAT
    return e.Div(e.expand_like(dy, x, y.shape), count)
