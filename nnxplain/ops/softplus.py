"""Softplus, log(1 + e^x): dy * sigmoid(x).

Its own record, not its ONNX function body (Log(Add(Exp(x), 1))): expanded, LRP would see an Exp and a
Log around an Add whose constant 1 absorbs a share of the relevance; as one activation,
relevance passes through it as through any other.
"""
from __future__ import annotations

from . import ALWAYS, op


@op("Softplus", "activation", pointwise=True, nonnegative=ALWAYS)
def softplus(e, node, dy):
    return [e.Mul(dy, e.Sigmoid(node.inputs[0]))]
