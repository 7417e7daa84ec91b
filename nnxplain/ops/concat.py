"""Concat: the gradient is split back into the pieces, sized at run time from the inputs' shapes."""
from __future__ import annotations

from ..emitter import shape
from . import IF_INPUTS, op


@op("Concat", "routing", nonnegative=IF_INPUTS, groups=("concat",))
def concat(e, node, dy):
    axis = node.attrs["axis"] % len(shape(node.outputs[0]))
    sizes = e.Concat(*[e.Gather(e.shape_of(x), e.ints([axis]), axis=0) for x in node.inputs], axis=0)
    pieces = e.op("Split", dy, sizes, axis=axis, outputs=len(node.inputs))
    return pieces if len(node.inputs) > 1 else [pieces]
