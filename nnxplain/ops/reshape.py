"""Ops that only rearrange or pass data through: the gradient is reshaped back to the input's shape."""
from __future__ import annotations

from . import vjp


@vjp("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(e, node, dy):
    x = node.inputs[0]
    return [e.reshape_like(dy, x)] + [None] * (len(node.inputs) - 1)


@vjp("Identity", "Dropout")
def identity(e, node, dy, d_mask=None):
    return [dy] + [None] * (len(node.inputs) - 1)
