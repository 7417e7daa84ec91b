"""ReduceMin: the gradient goes to each slice's minimum; where k elements tie for it, each gets dy / k
(torch.amin's even split).

Category "routing": it selects an input element, so LRP methods follow the gradient and relevance
goes exactly to the winner(s). Its output is >= 0 when its input is.
"""
from __future__ import annotations

from . import IF_INPUT, op
from ._extreme import reduced_extreme

reduce_min = op("ReduceMin", "routing", nonnegative=IF_INPUT)(reduced_extreme)
