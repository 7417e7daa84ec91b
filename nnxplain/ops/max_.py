"""Max (elementwise, n-ary, broadcasting): the gradient goes to the operand that is the maximum; where
k operands tie, each gets dy / k (torch.maximum's even split, for two operands).

Category "routing": it selects one of its inputs' elements, so LRP methods follow the gradient (the
rule of max pooling): relevance goes to the winner, exactly, and where a constant wins (Max(x, 0) is a
ReLU) the constant absorbs it, as a bias does. Its output is >= 0 when any operand is.
"""
from __future__ import annotations

from . import op
from ._extreme import elementwise_extreme


def nonnegative_if_any_input_is(node, nonnegative) -> bool:
    return any(nonnegative(t) for t in node.inputs)


max_ = op("Max", "routing", nonnegative=nonnegative_if_any_input_is)(elementwise_extreme)
