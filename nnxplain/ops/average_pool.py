"""AveragePool: each output's gradient is spread evenly over its window."""
from __future__ import annotations

import numpy as np

from ..emitter import FLOAT, static_dims
from .conv import fit_to, transpose_pads
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
    if x.shape is not None and not all(isinstance(d, (int, np.integer)) for d in x.shape[2:]):
        return [_dynamic(e, node, x, dy, kernel, strides, pads)]
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


def _dynamic(e, node, x, dy, kernel, strides, pads):
    """The gradient where x's spatial dims are known at run time only: each output's gradient over its
    window's count, spread by a ConvTranspose of ones and fitted to x's size. The count is the
    kernel's size, or without count_include_pad the real inputs in the window: the mean of ones over
    the zero-padded window times the kernel's size."""
    n = len(kernel)
    if node.attrs.get("ceil_mode", 0):
        raise ValueError("AveragePool with ceil_mode needs static spatial dims (its last window's size)")
    channels = x.shape[1]
    if not isinstance(channels, (int, np.integer)):
        raise ValueError(f"AveragePool's gradient needs the channels of '{x.name}', found {x.shape}")
    size = float(np.prod(kernel))
    if node.attrs.get("count_include_pad", 0) or not any(pads):
        scaled = e.Mul(dy, 1.0 / size)
    else:
        share = e.AveragePool(e.ConstantOfShape(e.Shape(x), value=np.ones(1, FLOAT)), kernel_shape=kernel,
                              strides=strides, pads=pads, count_include_pad=1)
        scaled = e.Div(dy, e.Mul(share, size))
    ones = np.ones([channels, 1] + list(kernel), FLOAT)
    spread = e.ConvTranspose(scaled, e.const(ones), strides=strides, pads=pads[:n] + [0] * n, group=channels)
    return fit_to(e, spread, x, n)
