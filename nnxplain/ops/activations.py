"""Pointwise activations: the incoming gradient times the local derivative."""
from __future__ import annotations


from . import vjp


@vjp("Relu")
def relu(e, node, dy):
    y = node.outputs[0]  # relu(x) > 0 exactly where x > 0; reading y lets ONNX Runtime fuse Conv + Relu
    return [e.Where(e.Greater(y, 0.0), dy, 0.0)]


@vjp("LeakyRelu")
def leaky_relu(e, node, dy):
    x = node.inputs[0]
    alpha = node.attrs.get("alpha", 0.01)
    return [e.Where(e.Greater(x, 0.0), dy, e.Mul(dy, float(alpha)))]


@vjp("Clip")
def clip(e, node, dy):
    """Passes the gradient strictly inside (min, max), as ReLU6 / hardtanh do."""
    x, low, high = (list(node.inputs) + [None, None])[:3]
    inside = None
    if low is not None and low.name:
        inside = e.Greater(x, low)
    if high is not None and high.name:
        below = e.Less(x, high)
        inside = below if inside is None else e.And(inside, below)
    return [dy if inside is None else e.Where(inside, dy, 0.0), None, None][:len(node.inputs)]


@vjp("Sigmoid")
def sigmoid(e, node, dy):
    y = node.outputs[0]
    return [e.Mul(dy, e.Mul(y, e.Sub(1.0, y)))]


@vjp("Tanh")
def tanh(e, node, dy):
    y = node.outputs[0]
    return [e.Mul(dy, e.Sub(1.0, e.Mul(y, y)))]


