"""CumSum along an axis (exclusive and reverse attributes): the gradient is the cumulative sum of dy
in the other direction, y_j = sum_{i <= j} x_i gives dx_i = sum_{j >= i} dy_j, with the same
exclusivity.

Category "proportional": each output is a sum of its inputs' contributions, and the z-rule shares
relevance in proportion to them. Its output is >= 0 when its input is.
"""
from __future__ import annotations

from . import IF_INPUT, op


@op("CumSum", "proportional", nonnegative=IF_INPUT)
def cum_sum(e, node, dy):
    x, axis = node.inputs
    reverse = 1 - int(node.attrs.get("reverse", 0))
    return [e.CumSum(dy, axis, exclusive=int(node.attrs.get("exclusive", 0)), reverse=reverse), None]
