"""Op adapters: for each supported ONNX op, its vector-Jacobian product written as ONNX nodes.

An adapter is `vjp(e, node, *dys) -> list` with one entry per node input: the gradient for that
input, or None where the input is not differentiable (weights, shapes, indices). `dys` holds one
gradient per node output (None for outputs nothing depends on). Adding an op is adding one module
here that registers itself with @vjp.

Linear ops (Conv, Gemm, MatMul with a constant weight) also register a `Linear` entry that exposes
their forward and transpose separately, so propagation rules can run them with modified weights.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

def _registrar(table: dict):
    """A decorator factory: `@register(*op_types)` puts the function into `table` under each op type."""
    def register_for(*op_types: str):
        def register(fn):
            for op_type in op_types:
                table[op_type] = fn
            return fn
        return register
    return register_for


VJP: dict[str, Callable] = {}
vjp = _registrar(VJP)


class Linear(NamedTuple):
    """A node that is linear in its activation input x: y = forward(x, W, b)."""
    x: int                   # input index of the activation
    weight: int              # input index of the weight
    bias: int | None         # input index of the bias, None if the op has none
    forward: Callable        # (e, node, x, W, b) -> y
    transpose: Callable      # (e, node, dy, W) -> dx, the adjoint of x -> forward(x, W, 0)


LINEAR: dict[str, Callable] = {}  # op_type -> (node -> Linear or None when this node is not linear)
linear = _registrar(LINEAR)


from . import (activations, avgpool, concat, conv, elementwise, gemm, matmul, maxpool, pad,  # noqa: E402,F401
               reduce, reshape, slice, split, transpose)
