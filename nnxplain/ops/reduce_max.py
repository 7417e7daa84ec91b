"""ReduceMax: the gradient goes to each slice's maximum; where k elements tie for it, each gets dy / k
(torch.amax's even split).

Category "routing", as GlobalMaxPool: it selects an input element, so LRP methods follow the gradient
and relevance goes exactly to the winner(s). Its output is >= 0 when its input is.
"""
from __future__ import annotations

from . import IF_INPUT, op
from ._extreme import reduced_extreme

reduce_max = op("ReduceMax", "routing", nonnegative=IF_INPUT)(reduced_extreme)
