"""Where(condition, X, Y) (broadcasting): X gets dy where the condition holds, Y where it does not, each
reduced back to its shape; the boolean condition carries no gradient.

Category "routing": it selects each output element from X or Y, so LRP methods follow the gradient and
relevance goes exactly to the selected element (where a constant is selected, as in attention masks,
the constant absorbs it). Its output is >= 0 when X's and Y's are.
"""
from __future__ import annotations

from . import op


def nonnegative_if_both_branches_are(node, nonnegative) -> bool:
    return nonnegative(node.inputs[1]) and nonnegative(node.inputs[2])


@op("Where", "routing", nonnegative=nonnegative_if_both_branches_are)
def where(e, node, dy):
    condition, x, y_ = node.inputs
    y = node.outputs[0]
    return [None, e.unbroadcast(e.Where(condition, dy, 0.0), x, y), e.unbroadcast(e.Where(condition, 0.0, dy), y_, y)]
