"""Relu: the gradient passes where the output is positive."""
from __future__ import annotations

from . import ALWAYS, op


@op("Relu", "activation", pointwise=True, zero_preserving=True, nonnegative=ALWAYS, groups=("relu",))
def relu(e, node, dy):
    y = node.outputs[0]  # relu(x) > 0 exactly where x > 0; reading y lets ONNX Runtime fuse Conv + Relu
    return [e.Where(e.Greater(y, 0.0), dy, 0.0)]
