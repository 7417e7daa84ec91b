"""Slice (any steps, negative too): the gradient is placed back where the slice came from, zeros elsewhere.

Starts and ends computed at run time (an exporter's `x[:, :H]` with H read off a shape) are taken
for slices with unit steps and constant axes: the padding that puts the gradient back is computed in
the graph, clamped as the ONNX specification clamps them."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..emitter import shape
from . import IF_INPUT, op


def _constant(node, i, what):
    t = node.inputs[i] if len(node.inputs) > i else None
    if t is None or not t.name:
        return None
    if not isinstance(t, gs.Constant):
        raise ValueError(f"Slice {what} computed at run time are not supported")
    return [int(v) for v in t.values.reshape(-1)]


def normalize(start, end, step, size):
    """First index taken and number of elements, as the ONNX Slice specification clamps them."""
    if step > 0:
        start = min(max(start + size if start < 0 else start, 0), size)
        end = min(max(end + size if end < 0 else end, 0), size)
        return start, max(0, -(-(end - start) // step))
    start = min(max(start + size if start < 0 else start, 0), size - 1)
    end = min(max(end + size if end < 0 else end, -1), size - 1)
    return start, max(0, -(-(start - end) // -step))


@op("Slice", "routing", nonnegative=IF_INPUT)
def slice_(e, node, dy):
    x = node.inputs[0]
    dims = shape(x)
    rank = len(dims)
    if not all(isinstance(t, gs.Constant) for t in node.inputs[1:3]):
        return [_padded_back(e, node, dy, rank)] + [None] * (len(node.inputs) - 1)
    starts, ends = _constant(node, 1, "starts"), _constant(node, 2, "ends")
    axes = _constant(node, 3, "axes") or list(range(len(starts)))
    steps = _constant(node, 4, "steps") or [1] * len(starts)
    g = dy
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= rank
        size = dims[axis]
        if not isinstance(size, (int, np.integer)):
            raise ValueError(f"Slice along axis {axis} of unknown size")
        first, count = normalize(start, end, step, int(size))
        if count == 0:
            return [e.zeros_like(x)] + [None] * (len(node.inputs) - 1)
        if step < 0:  # reverse, then it is a forward slice starting at the last index taken
            g = e.Slice(g, e.ints([-1]), e.ints([-(2 ** 62)]), e.ints([axis]), e.ints([-1]))
            first, step = first + (count - 1) * step, -step
        if step > 1:  # interleave step-1 zeros after each element, then drop the trailing ones
            g = _spread(e, g, axis, rank, count, step)
        covered = (count - 1) * step + 1
        pads = [0] * (2 * rank)
        pads[axis], pads[rank + axis] = first, int(size) - first - covered
        g = e.Pad(g, e.ints(pads))
    return [g] + [None] * (len(node.inputs) - 1)


def _spread(e, g, axis, rank, count, step):
    """[.., count, ..] -> [.., (count-1)*step+1, ..] with element i at position i*step, zeros between."""
    dims = e.Shape(g)
    pads = [0] * 2 * (rank + 1)
    pads[rank + 1 + axis + 1] = step - 1
    g = e.Pad(e.Unsqueeze(g, e.ints([axis + 1])), e.ints(pads))
    merged = e.Concat(e.Slice(dims, e.ints([0]), e.ints([axis])), e.ints([count * step]),
                      e.Slice(dims, e.ints([axis + 1]), e.ints([rank])), axis=0)
    g = e.Reshape(g, merged)
    return e.Slice(g, e.ints([0]), e.ints([(count - 1) * step + 1]), e.ints([axis]))


def _padded_back(e, node, dy, rank):
    """The gradient of a unit-step Slice whose starts or ends are known at run time only: dy padded
    with zeros before the first index taken and after the last, per sliced axis."""
    k = shape(node.inputs[1])
    if not k or not isinstance(k[0], (int, np.integer)):
        raise ValueError("Slice starts computed at run time, of unknown length, are not supported")
    k = int(k[0])
    axes = _constant(node, 3, "axes") or list(range(k))
    if any(step != 1 for step in (_constant(node, 4, "steps") or [1] * k)):
        raise ValueError("Slice with starts or ends computed at run time and steps other than 1 is not supported")
    axes = [a % rank for a in axes]
    size = e.Gather(e.Shape(node.inputs[0]), e.ints(axes), axis=0)
    zero = e.ints([0])

    def clamped(t):  # negative counts from the end; then clamped to [0, size]
        t = e.Cast(t, to=7)  # 7 = INT64
        t = e.Where(e.Less(t, zero), e.Add(t, size), t)
        return e.Min(e.Max(t, zero), size)
    first, end = clamped(node.inputs[1]), clamped(node.inputs[2])
    count = e.Max(e.Sub(end, first), zero)
    after = e.Sub(e.Sub(size, first), count)
    pads = e.ScatterElements(e.ints([0] * (2 * rank)), e.ints(axes + [rank + a for a in axes]),
                             e.Concat(first, after, axis=0), axis=0)
    return e.Pad(dy, pads)
