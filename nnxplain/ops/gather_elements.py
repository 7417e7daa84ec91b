"""GatherElements: each output element is x at its index along `axis`; the gradient is added back
there (ScatterElements with reduction="add", which sums where an index repeats), zeros elsewhere."""
from __future__ import annotations

from . import IF_INPUT, op
from .gather import _nonnegative


@op("GatherElements", "routing", nonnegative=IF_INPUT)
def gather_elements(e, node, dy):
    x, indices = node.inputs
    axis = node.attrs.get("axis", 0)
    size = e.Gather(e.shape_of(x), e.ints([axis % len(x.shape)]), axis=0)
    return [e.ScatterElements(e.zeros_like(x), _nonnegative(e, indices, size), dy, axis=axis, reduction="add"), None]
