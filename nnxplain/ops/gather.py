"""Gather (any axis; indices constant or computed, negative ones too, a scalar index dropping the
axis as the class-token select x[:, 0] does): the gradient is added back at the gathered positions,
zeros elsewhere, with ScatterElements(reduction="add"), which sums where an index repeats. A
constant index, or a constant run of consecutive ones, on an axis of static size (q, k, v = qkv[i];
x[:, 0]) pads the gradient with zeros instead.

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
    run = constant_run(indices, shape(x)[axis])
    if run is not None:  # dy padded with zeros: a copy, where the scatter below costs several (q, k, v = qkv[i])
        start, count, size = run
        if indices.values.ndim == 0:  # the axis was dropped
            dy = e.Unsqueeze(dy, e.ints([axis]))
        pads = [0] * (2 * rank)
        pads[axis], pads[rank + axis] = start, size - start - count
        return [e.Pad(dy, e.ints(pads)), None]
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


def constant_run(indices, size) -> tuple[int, int, int] | None:
    """(first, count, axis size) where the indices are a constant scalar or a constant run of
    consecutive ascending positions on an axis of static size; None otherwise."""
    if not isinstance(indices, gs.Constant) or not isinstance(size, (int, np.integer)) or indices.values.ndim > 1:
        return None
    values = indices.values.astype(np.int64).reshape(-1)
    values = np.where(values < 0, values + size, values)
    if len(values) == 0 or values[0] < 0 or values[-1] >= size or not (np.diff(values) == 1).all():
        return None
    return int(values[0]), len(values), int(size)


def _nonnegative(e, indices, size):
    """The indices as int64, negative ones counted from the end of the axis (`size` long)."""
    if isinstance(indices, gs.Constant):
        values = indices.values.astype(np.int64)
        if (values >= 0).all():
            return e.const(values)
    indices = e.Cast(indices, to=7)  # 7 = INT64
    return e.Where(e.Less(indices, e.const(np.array(0, np.int64))), e.Add(indices, size), indices)
