"""Add, Sub, Mul, Div with broadcasting: each operand's gradient is reduced back to its own shape."""
from __future__ import annotations

from . import vjp


@vjp("Add")
def add(e, node, dy):
    a, b = node.inputs
    y = node.outputs[0]
    return [e.unbroadcast(dy, a, y), e.unbroadcast(dy, b, y)]


@vjp("Sub")
def sub(e, node, dy):
    a, b = node.inputs
    y = node.outputs[0]
    return [e.unbroadcast(dy, a, y), e.unbroadcast(e.Neg(dy), b, y)]


@vjp("Mul")
def mul(e, node, dy):
    a, b = node.inputs
    y = node.outputs[0]
    return [e.unbroadcast(e.Mul(dy, b), a, y), e.unbroadcast(e.Mul(dy, a), b, y)]


@vjp("Div")
def div(e, node, dy):
    a, b = node.inputs
    y = node.outputs[0]
    da = e.Div(dy, b)
    return [e.unbroadcast(da, a, y), e.unbroadcast(e.Neg(e.Mul(da, y)), b, y)]  # d(a/b)/db = -y/b
