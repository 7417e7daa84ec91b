"""Gelu (opset 20), x Phi(x) with Phi the standard normal CDF; approximate="tanh" replaces Phi(x) by
(1 + tanh(u)) / 2 with u = sqrt(2 / pi) (x + 0.044715 x^3).

    exact:  dy * (Phi(x) + x phi(x)),  phi(x) = e^(-x^2 / 2) / sqrt(2 pi)
    tanh:   dy * ((1 + tanh(u)) / 2 + x u' / (2 cosh(u)^2)),  u' = sqrt(2 / pi) (1 + 3 * 0.044715 x^2)

Its own record, not its ONNX function body (a Mul of x by a function of x): expanded, LRP would see a
Mul of two computed tensors, which the z-rule refuses, not one activation that relevance passes
through. gelu(0) = 0; its output dips below 0 (to about -0.17) for x < 0, and is >= 0 where x is.
"""
from __future__ import annotations

import math

from . import IF_INPUT, op

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
CUBIC = 0.044715


@op("Gelu", "activation", pointwise=True, zero_preserving=True, nonnegative=IF_INPUT)
def gelu(e, node, dy):
    x = node.inputs[0]
    approximate = node.attrs.get("approximate", "none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
    if approximate == "none":
        cdf = e.Mul(e.Add(e.Erf(e.Mul(x, 1.0 / math.sqrt(2.0))), 1.0), 0.5)
        pdf = e.Mul(e.Exp(e.Mul(e.Mul(x, x), -0.5)), 1.0 / math.sqrt(2.0 * math.pi))
        return [e.Mul(dy, e.Add(cdf, e.Mul(x, pdf)))]
    if approximate == "tanh":
        x2 = e.Mul(x, x)
        u = e.Mul(e.Add(x, e.Mul(e.Mul(x2, x), CUBIC)), SQRT_2_OVER_PI)
        du = e.Mul(e.Add(e.Mul(x2, 3.0 * CUBIC), 1.0), SQRT_2_OVER_PI)
        cosh = e.Cosh(u)  # 1 / cosh(u)^2 rather than 1 - tanh(u)^2, which cancels to nothing where tanh(u) ~ 1
        slope = e.Add(e.Mul(e.Add(e.Tanh(u), 1.0), 0.5), e.Div(e.Mul(e.Mul(x, du), 0.5), e.Mul(cosh, cosh)))
        return [e.Mul(dy, slope)]
    raise ValueError(f"Gelu approximate='{approximate}' is not one of 'none', 'tanh'")
