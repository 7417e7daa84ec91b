"""AveragePool: each output's gradient is spread evenly over its window."""
from __future__ import annotations

import numpy as np

from ..emitter import FLOAT, static_dims
from .conv import transpose_pads
from . import IF_INPUT, op


def window_sizes(size, out, k, s, pb, pe, count_include_pad):
    """The divisor of each output position along one axis (ONNX Runtime's and torch's convention)."""
    start = np.arange(out) * s - pb
    end = np.minimum(start + k, size + pe)
    if count_include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


def output_size(size, k, s, pb, pe, ceil_mode):
    """Output length along one axis as ONNX Runtime computes it (torch's ceil_mode convention)."""
    reach = size + pb + pe - k
    out = (-(-reach // s) if ceil_mode else reach // s) + 1
    if ceil_mode and (out - 1) * s >= size + pb:
        out -= 1
    return out


@op("AveragePool", "proportional", nonnegative=IF_INPUT, groups=("pooling",))
def average_pool(e, node, dy):
    x = node.inputs[0]
    kernel = node.attrs["kernel_shape"]
    n = len(kernel)
    if any(d != 1 for d in node.attrs.get("dilations", [1] * n)):
        raise ValueError("AveragePool with dilations has no adapter yet")
    strides = node.attrs.get("strides", [1] * n)
    pads = node.attrs.get("pads", [0] * 2 * n)
    channels, *in_dims = static_dims(x, "AveragePool's gradient", 1)
    # The output size comes from the attributes, not from y's inferred shape: with ceil_mode, a last
    # window that would start in the end padding is dropped by ONNX Runtime (and torch) but counted
    # by ONNX shape inference for opsets up to 21, so y's static shape can be one too large per axis.
    out_dims = [output_size(size, k, s, pads[a], pads[n + a], node.attrs.get("ceil_mode", 0))
                for a, (size, k, s) in enumerate(zip(in_dims, kernel, strides))]
    inverse = np.ones([1, 1] + out_dims, FLOAT)
    for axis, (size, out, k, s) in enumerate(zip(in_dims, out_dims, kernel, strides)):
        counts = window_sizes(size, out, k, s, pads[axis], pads[n + axis], node.attrs.get("count_include_pad", 0))
        inverse = inverse / counts.reshape([-1] + [1] * (n - 1 - axis)).astype(FLOAT)
    begin, end, extra = transpose_pads(in_dims, out_dims, kernel, strides, [1] * n, pads[:n])
    ones = np.ones([channels, 1] + list(kernel), FLOAT)
    return [e.ConvTranspose(e.Mul(dy, e.const(inverse)), e.const(ones), strides=strides, pads=begin + end,
                            output_padding=extra, group=channels)]
