"""Min (elementwise, n-ary, broadcasting): the gradient goes to the operand that is the minimum; where
k operands tie, each gets dy / k (torch.minimum's even split, for two operands).

Category "routing": it selects one of its inputs' elements, so LRP methods follow the gradient:
relevance goes to the winner, exactly, and where a constant wins the constant absorbs it, as a bias
does. Its output is >= 0 when every operand is.
"""
from __future__ import annotations

from . import IF_INPUTS, op
from ._extreme import elementwise_extreme

min_ = op("Min", "routing", nonnegative=IF_INPUTS)(elementwise_extreme)
