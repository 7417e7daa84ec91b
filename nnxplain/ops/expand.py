"""Expand (broadcast to a shape): the gradient is summed over the copies, back to the input's shape.

Category "routing": it copies input elements, so LRP methods follow the gradient and each element
gets the relevance of all its copies (conserved exactly). Copies keep the sign.
"""
from __future__ import annotations

from . import IF_INPUT, op


@op("Expand", "routing", nonnegative=IF_INPUT)
def expand(e, node, dy):
    x = node.inputs[0]
    return [e.unbroadcast(dy, x, node.outputs[0]), None]
