"""Cast: between float types the gradient is cast back to the input's type (CastLike the input, so the
type need not be known when the graph is compiled); a cast to any other type (integers, bool) is not
differentiable, and its output carries no gradient.

Category "routing": a float-to-float cast copies each element (rounded), so LRP methods move relevance
through it unchanged by following the gradient. Not marked pointwise: routing ops that are pointwise
are the pass-throughs canonicalize drops (Identity, Dropout), and a Cast computes something (a
rounding, or an integer). It keeps 0 and the sign.
"""
from __future__ import annotations

import onnx

from . import IF_INPUT, op

P = onnx.TensorProto
FLOAT_TYPES = {P.FLOAT, P.FLOAT16, P.DOUBLE, P.BFLOAT16}  # those the backward pass differentiates


@op("Cast", "routing", zero_preserving=True, nonnegative=IF_INPUT)
def cast(e, node, dy):
    if node.attrs["to"] not in FLOAT_TYPES:
        return [None]
    return [e.CastLike(dy, node.inputs[0])]  # (asked only when its input is live: a float)
