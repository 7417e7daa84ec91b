"""ReduceL2, sqrt(sum x^2) over the axes: dy * x / y, and 0 where y = 0 (as torch's norm).

Category "nonlinear": the output is a nonlinear function of all the elements it reduces, neither a sum
of their contributions nor a selection of one, so LRP methods refuse it by name until a propagation
rule names the op. Its output is never negative.
"""
from __future__ import annotations

from . import ALWAYS, op
from ._norms import nonlinear_reduction


def _slope(e, x, y):
    return e.Where(e.Equal(y, 0.0), 0.0, e.Div(x, y))


reduce_l2 = op("ReduceL2", "nonlinear", nonnegative=ALWAYS)(nonlinear_reduction(_slope))
