"""Identity: the gradient passes unchanged."""
from __future__ import annotations

from . import IF_INPUT, op


def pass_through(e, node, dy, d_mask=None):
    """The gradient of an op whose (first) output is its first input (Identity, inference Dropout)."""
    return [dy] + [None] * (len(node.inputs) - 1)


op("Identity", "routing", pointwise=True, zero_preserving=True, nonnegative=IF_INPUT)(pass_through)
