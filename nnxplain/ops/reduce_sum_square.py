"""ReduceSumSquare, sum x^2 over the axes: dy * 2 x.

Category "nonlinear": the output is a sum of squares, not of its inputs' contributions, so LRP
methods refuse it by name until a propagation rule names the op. Its output is never negative.
"""
from __future__ import annotations

from . import ALWAYS, op
from ._norms import nonlinear_reduction


def _slope(e, x, y):
    return e.Mul(x, 2.0)


reduce_sum_square = op("ReduceSumSquare", "nonlinear", nonnegative=ALWAYS)(nonlinear_reduction(_slope))
