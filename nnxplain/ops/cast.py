"""Cast: between float types the gradient is cast back to the input's type; a cast to any other type
(integers, bool) is not differentiable, and its output carries no gradient.

Category "routing": a float-to-float cast copies each element (rounded), so LRP methods move relevance
through it unchanged by following the gradient. Not marked pointwise: routing ops that are pointwise
are the pass-throughs canonicalize drops (Identity, Dropout), and a Cast computes something (a
rounding, or an integer). It keeps 0 and the sign.
"""
from __future__ import annotations

import numpy as np
import onnx

from . import IF_INPUT, op

P = onnx.TensorProto
FLOAT_TYPES = {P.FLOAT, P.FLOAT16, P.DOUBLE, P.BFLOAT16}  # those the backward pass differentiates


def onnx_type(dtype) -> int:
    """A tensor type as ONNX's TensorProto number (graphsurgeon gives numpy dtypes, or the number for
    types numpy lacks)."""
    try:
        return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    except TypeError:
        return int(dtype)


@op("Cast", "routing", zero_preserving=True, nonnegative=IF_INPUT)
def cast(e, node, dy):
    x = node.inputs[0]
    if node.attrs["to"] not in FLOAT_TYPES:
        return [None]
    if x.dtype is None:
        raise ValueError(f"the type of Cast's input '{x.name}' is unknown")
    source = onnx_type(x.dtype)
    return [e.Cast(dy, to=source) if source in FLOAT_TYPES else None]
