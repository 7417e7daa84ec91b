"""What the normalizations' gradients share (LayerNormalization, GroupNormalization,
InstanceNormalization): y = xhat * scale + bias, with xhat = (x - mean) / sqrt(var + epsilon) over
some axes. With g = dy * scale, the gradient at x is

    dx = r * (g - mean(g) - xhat * mean(g * xhat)),    r = 1 / sqrt(var + epsilon),

the means taken over the same axes. The mean and r are recomputed from x (ReduceSum and a count:
ReduceMean's axes moved from attribute to input in opset 18, and the graph may be of either)."""
from __future__ import annotations

import numpy as np

from ..emitter import FLOAT, shape


def mean(e, t, axes: list[int], like):
    """The mean of t over `axes` (kept as dims of size 1); `like`: a tensor whose dims on `axes`
    are t's (the count is a constant where they are known when the graph is compiled)."""
    total = e.ReduceSum(t, e.ints(axes), keepdims=1)
    dims = shape(like)
    reduced = None if dims is None else [dims[a] for a in axes]
    if reduced is not None and all(isinstance(d, (int, np.integer)) for d in reduced):
        return e.Mul(total, np.array(1.0 / max(int(np.prod(reduced)), 1), FLOAT))
    count = e.ReduceProd(e.Gather(e.Shape(t), e.ints(axes), axis=0), keepdims=0)
    return e.Div(total, e.Cast(count, to=1))  # 1 = FLOAT


def standardized(e, x, axes: list[int], epsilon: float):
    """(xhat, r): x standardized over `axes`, and r = 1 / sqrt(var + epsilon) (kept dims)."""
    centered = e.Sub(x, mean(e, x, axes, x))
    variance = mean(e, e.Mul(centered, centered), axes, x)
    r = e.Reciprocal(e.Sqrt(e.Add(variance, np.array(epsilon, FLOAT))))
    return e.Mul(centered, r), r


def standardized_vjp(e, g, xhat, r, axes: list[int]):
    """The gradient at x of standardizing x over `axes`, given g, the gradient at xhat."""
    centered = e.Sub(g, mean(e, g, axes, g))
    return e.Mul(r, e.Sub(centered, e.Mul(xhat, mean(e, e.Mul(g, xhat), axes, g))))
