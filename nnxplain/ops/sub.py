"""Sub (broadcasting): dy and -dy, each reduced back to its operand's shape."""
from __future__ import annotations

from . import op


@op("Sub", "proportional", groups=("add",))
def sub(e, node, dy):
    a, b = node.inputs
    y = node.outputs[0]
    return [e.unbroadcast(dy, a, y), e.unbroadcast(e.Neg(dy), b, y)]
