"""Gather (any axis; indices constant or computed, negative ones too, a scalar index dropping the
axis as the class-token select x[:, 0] does): the gradient is added back at the gathered positions,
zeros elsewhere, with ScatterElements(reduction="add"), which sums where an index repeats.

dy has x's dims before and after `axis` and the indices' dims in between; flattened there to one
axis of K = indices.size positions, it is scattered along `axis` into zeros shaped like x, each of
the K slices at its index."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..emitter import FLOAT, shape
from . import IF_INPUT, op


@op("Gather", "routing", nonnegative=IF_INPUT)
def gather(e, node, dy):
    x, indices = node.inputs
    rank = len(shape(x))
    axis = node.attrs.get("axis", 0) % rank
    dims = e.shape_of(x)
    # dy as x's dims around `axis` and the K gathered positions along it
    flat = e.Concat(e.Slice(dims, e.ints([0]), e.ints([axis])), e.ints([-1]),
                    e.Slice(dims, e.ints([axis + 1]), e.ints([rank])), axis=0)
    dy = e.Reshape(dy, flat)
    where = e.Reshape(_nonnegative(e, indices, e.Gather(dims, e.ints([axis]), axis=0)),
                      e.ints([1] * axis + [-1] + [1] * (rank - axis - 1)))
    where = e.Expand(where, e.Shape(dy))
    zeros = e.ConstantOfShape(dims, value=np.zeros(1, FLOAT))
    return [e.ScatterElements(zeros, where, dy, axis=axis, reduction="add"), None]


def _nonnegative(e, indices, size):
    """The indices as int64, negative ones counted from the end of the axis (`size` long)."""
    if isinstance(indices, gs.Constant):
        values = indices.values.astype(np.int64)
        if (values >= 0).all():
            return e.const(values)
    indices = e.Cast(indices, to=7)  # 7 = INT64
    return e.Where(e.Less(indices, e.const(np.array(0, np.int64))), e.Add(indices, size), indices)
