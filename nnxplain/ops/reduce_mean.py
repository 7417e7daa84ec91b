"""ReduceMean: the gradient is spread evenly back over the reduced axes."""
from __future__ import annotations

from . import IF_INPUT, op
from ._reduce import reduction
from .global_average_pool import spread_mean

reduce_mean = op("ReduceMean", "proportional", nonnegative=IF_INPUT, groups=("pooling",))(reduction(spread_mean))
