"""Split: the pieces' gradients are concatenated back (zeros for pieces nothing depends on)."""
from __future__ import annotations

from ..emitter import shape
from . import IF_INPUT, op


@op("Split", "routing", nonnegative=IF_INPUT)
def split(e, node, *dys):
    axis = node.attrs.get("axis", 0) % len(shape(node.inputs[0]))
    pieces = [dy if dy is not None else e.zeros_like(out) for dy, out in zip(dys, node.outputs)]
    return [e.Concat(*pieces, axis=axis) if len(pieces) > 1 else pieces[0]] + [None] * (len(node.inputs) - 1)
