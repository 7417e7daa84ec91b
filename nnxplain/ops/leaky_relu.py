"""LeakyRelu: the gradient passes where x > 0, times alpha elsewhere."""
from __future__ import annotations

from . import op


@op("LeakyRelu", "activation", pointwise=True, zero_preserving=True)
def leaky_relu(e, node, dy):
    x = node.inputs[0]
    alpha = node.attrs.get("alpha", 0.01)
    return [e.Where(e.Greater(x, 0.0), dy, e.Mul(dy, float(alpha)))]
