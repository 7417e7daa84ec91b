"""Mul (broadcasting): each operand's gradient is dy times the other operand, reduced back to its shape.
Proportional for LRP when one operand is a constant (a scale); the rules check that."""
from __future__ import annotations

from . import op


@op("Mul", "proportional")
def mul(e, node, dy):
    a, b = node.inputs
    y = node.outputs[0]
    return [e.unbroadcast(e.Mul(dy, b), a, y), e.unbroadcast(e.Mul(dy, a), b, y)]
