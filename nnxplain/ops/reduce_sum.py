"""ReduceSum: the gradient is broadcast back over the reduced axes."""
from __future__ import annotations

from . import IF_INPUT, op
from ._reduce import reduction

reduce_sum = op("ReduceSum", "proportional", nonnegative=IF_INPUT)(reduction(lambda e, g, x, y: e.Expand(g, e.shape_of(x))))
