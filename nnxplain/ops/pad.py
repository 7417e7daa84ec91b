"""Pad (constant mode): the gradient is the padded gradient cropped back; negative pads (crops) pad it back.
With pads computed at run time (an exporter's pad to a multiple of a window size, read off a shape),
that is one Pad of the gradient by the negated pads (a negative pad crops)."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from ..emitter import shape
from . import op


def nonnegative_padded(node, nonnegative) -> bool:
    """A Pad of a nonnegative input is nonnegative unless it pads with a negative (or computed) value."""
    if node.attrs.get("mode", "constant") == "constant":
        value = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
        if value is not None and not (isinstance(value, gs.Constant) and (value.values >= 0).all()):
            return False
    return nonnegative(node.inputs[0])


@op("Pad", "routing", nonnegative=nonnegative_padded)
def pad(e, node, dy):
    x = node.inputs[0]
    mode = node.attrs.get("mode", "constant")
    if mode != "constant":
        raise ValueError(f"Pad mode '{mode}' has no adapter (only 'constant')")
    rank = len(shape(x))
    pads_t = node.inputs[1] if len(node.inputs) > 1 else None
    if pads_t is None:
        raise ValueError("Pad without pads")
    if not isinstance(pads_t, gs.Constant):
        has_axes = len(node.inputs) > 3 and node.inputs[3].name
        back = e.Pad(dy, e.Neg(e.Cast(pads_t, to=7)), *([None, node.inputs[3]] if has_axes else []))  # 7 = INT64
        return [back] + [None] * (len(node.inputs) - 1)
    pads = [int(p) for p in pads_t.values.reshape(-1)]
    axes = list(range(rank))
    if len(node.inputs) > 3 and node.inputs[3].name:
        axes = [int(a) % rank for a in node.inputs[3].values.reshape(-1)]
    full = [0] * 2 * rank
    for i, axis in enumerate(axes):
        full[axis], full[rank + axis] = pads[i], pads[len(axes) + i]
    if any(p < 0 for p in full):  # the forward cropped there: give those positions zero gradient
        dy = e.Pad(dy, e.ints([max(-p, 0) for p in full]))
    starts = [max(p, 0) for p in full[:rank]]
    ends = [-p if p > 0 else 2 ** 62 for p in full[rank:]]  # counted from the end: exact for dynamic dims
    return [e.Slice(dy, e.ints(starts), e.ints(ends), e.ints(list(range(rank))))] + [None] * (len(node.inputs) - 1)
