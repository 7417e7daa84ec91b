"""Clip: the gradient passes strictly inside (min, max), as ReLU6 / hardtanh do."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from . import op


def _bounds(node):
    """(low, high): constant tensors, or None where the bound is absent."""
    low, high = (list(node.inputs[1:]) + [None, None])[:2]
    return tuple(None if b is None or not b.name else b for b in (low, high))


def zero_inside(node) -> bool:
    """clip(0) = 0: both bounds are constants (or absent) with low <= 0 <= high."""
    low, high = _bounds(node)
    return all(b is None or (isinstance(b, gs.Constant) and bool((b.values <= 0 if b is low else b.values >= 0).all()))
               for b in (low, high))


def low_nonnegative(node, nonnegative) -> bool:
    low = _bounds(node)[0]
    return isinstance(low, gs.Constant) and bool((low.values >= 0).all())


@op("Clip", "activation", pointwise=True, zero_preserving=zero_inside, nonnegative=low_nonnegative)
def clip(e, node, dy):
    x = node.inputs[0]
    low, high = _bounds(node)
    inside = None
    if low is not None:
        inside = e.Greater(x, low)
    if high is not None:
        below = e.Less(x, high)
        inside = below if inside is None else e.And(inside, below)
    return [dy if inside is None else e.Where(inside, dy, 0.0), None, None][:len(node.inputs)]
