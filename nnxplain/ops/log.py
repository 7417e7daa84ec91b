"""Log: dy / x.

A pointwise activation: relevance passes through it. log(0) = -inf and log(x) < 0 for x < 1, so it
neither preserves zeros nor is nonnegative.
"""
from __future__ import annotations

from . import op


@op("Log", "activation", pointwise=True)
def log(e, node, dy):
    return [e.Div(dy, node.inputs[0])]
