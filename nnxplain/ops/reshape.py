"""Reshape: the gradient is reshaped back to the input's shape."""
from __future__ import annotations

from . import IF_INPUT, op


def reshape_back(e, node, dy):
    """The gradient of any op that only rearranges its input's elements in order (Reshape, Flatten,
    Squeeze, Unsqueeze)."""
    x = node.inputs[0]
    return [e.reshape_like(dy, x, node.outputs[0].shape)] + [None] * (len(node.inputs) - 1)


op("Reshape", "routing", nonnegative=IF_INPUT)(reshape_back)
