"""Add (broadcasting): each operand's gradient is dy reduced back to its own shape."""
from __future__ import annotations

from . import op


@op("Add", "proportional", groups=("add",))
def add(e, node, dy):
    a, b = node.inputs
    y = node.outputs[0]
    return [e.unbroadcast(dy, a, y), e.unbroadcast(dy, b, y)]
