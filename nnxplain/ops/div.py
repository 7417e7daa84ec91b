"""Div (broadcasting): dy / b and -dy y / b, each reduced back to its operand's shape.
Proportional for LRP when the divisor is a constant (a scale); the rules check that."""
from __future__ import annotations

from . import op


@op("Div", "proportional")
def div(e, node, dy):
    a, b = node.inputs
    y = node.outputs[0]
    da = e.Div(dy, b)
    return [e.unbroadcast(da, a, y), e.unbroadcast(e.Neg(e.Mul(da, y)), b, y)]  # d(a/b)/db = -y/b
