"""ReduceLogSumExp, log(sum e^x) over the axes: dy * e^(x - y), the softmax of x over the axes.

Category "nonlinear": the output is a smooth maximum of all the elements it reduces, neither a sum of
their contributions nor a selection of one, so LRP methods refuse it by name until a propagation
rule names the op. Its output has no known sign.
"""
from __future__ import annotations

from . import op
from ._norms import nonlinear_reduction


def _slope(e, x, y):
    return e.Exp(e.Sub(x, y))


reduce_log_sum_exp = op("ReduceLogSumExp", "nonlinear")(nonlinear_reduction(_slope))
