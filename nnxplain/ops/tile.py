"""Tile: the gradient is summed over the tiles. The output's axis i is repeats[i] tiles of the input's
axis i, so dy reshaped to [r0, d0, r1, d1, ...] and summed over the r axes is the input's gradient
(repeats and input dims read at run time: both may be dynamic).

Category "routing": it copies input elements, so LRP methods follow the gradient and each element
gets the relevance of all its copies (conserved exactly). Copies keep the sign.
"""
from __future__ import annotations

from ..emitter import shape
from . import IF_INPUT, op


@op("Tile", "routing", nonnegative=IF_INPUT)
def tile(e, node, dy):
    x, repeats = node.inputs
    dims = shape(x)
    if dims is None:
        raise ValueError(f"the rank of Tile's input '{x.name}' is unknown")
    rank = len(dims)
    column = e.ints([1])
    pairs = e.Concat(e.Unsqueeze(repeats, column), e.Unsqueeze(e.shape_of(x), column), axis=1)  # [[r0, d0], ...]
    tiles = e.Reshape(dy, e.Reshape(pairs, e.ints([-1])))
    return [e.ReduceSum(tiles, e.ints(list(range(0, 2 * rank, 2))), keepdims=0), None]
