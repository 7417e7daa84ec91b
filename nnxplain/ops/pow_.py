"""Pow, a^b (broadcasting): dy * b a^(b - 1) for the base and dy * y ln(a) for the exponent, each
reduced back to its operand's shape; as torch's, the base gets 0 where b = 0 and the exponent gets 0
where a = 0 and b >= 0 (0^b does not change with b there).

Category "nonlinear", not "activation": a^c with a constant exponent is a pointwise activation of a,
but c^x (the computed operand second) and a^b (both computed) are not, and an op's category is one
for all its nodes; passing relevance to input 0 would be wrong for both. So LRP methods refuse Pow
by name, while the gradient methods apply to every form. (Where exports write Pow, x^2 in a
decomposed LayerNorm and x^3 in GELU's tanh form, the node beside it, a Div or Mul of two computed
tensors, is refused by LRP anyway.)
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..emitter import FLOAT
from . import op


@op("Pow", "nonlinear")
def pow_(e, node, dy):
    a, b = node.inputs
    y = node.outputs[0]
    if isinstance(b, gs.Constant):
        exponent = b.values.astype(FLOAT)
        # b a^(b - 1), with b = 0 written as 0 * a^1 so that 0^(-1) never meets the zero factor
        slope = e.Mul(e.Pow(a, e.const(np.where(exponent == 0, 1, exponent - 1).astype(FLOAT))), e.const(exponent))
        return [e.unbroadcast(e.Mul(dy, slope), a, y), None]
    integer = b.dtype is not None and np.issubdtype(np.dtype(b.dtype), np.integer)
    exponent = e.Cast(b, to=onnx.TensorProto.FLOAT) if integer else b
    da = db = None
    if not isinstance(a, gs.Constant):
        slope = e.Where(e.Equal(exponent, 0.0), 0.0, e.Mul(exponent, e.Pow(a, e.Sub(exponent, 1.0))))
        da = e.unbroadcast(e.Mul(dy, slope), a, y)
    if not integer:  # an integer exponent is not differentiable
        zero_base = e.And(e.Equal(a, 0.0), e.GreaterOrEqual(exponent, 0.0))
        db = e.unbroadcast(e.Mul(dy, e.Where(zero_base, 0.0, e.Mul(y, e.Log(a)))), b, y)
    return [da, db]
