"""ThresholdedRelu, x where x > alpha and 0 elsewhere: the gradient passes where x > alpha (as torch's
F.threshold).

A pointwise activation: relevance passes through it. It maps 0 to 0 whatever alpha (0 is either
dropped or kept as it is); its output is >= 0 when alpha >= 0 (what it keeps is above alpha) or when
its input is.
"""
from __future__ import annotations

from . import op


def _alpha(node) -> float:
    return float(node.attrs.get("alpha", 1.0))


def nonnegative_when_alpha_is(node, nonnegative) -> bool:
    return _alpha(node) >= 0 or nonnegative(node.inputs[0])


@op("ThresholdedRelu", "activation", pointwise=True, zero_preserving=True, nonnegative=nonnegative_when_alpha_is)
def thresholded_relu(e, node, dy):
    return [e.Where(e.Greater(node.inputs[0], _alpha(node)), dy, 0.0)]
