"""Conv (any rank, strides, pads, dilations, groups).

The transpose (input gradient) of a stride-1 Conv is itself a Conv: of dy with the weight's in/out
channels swapped (per group) and its taps flipped, padded by (k - 1) * d - pads. ONNX Runtime runs
that through its fast (NCHWc) Conv kernels, where ConvTranspose is a GEMM plus col2im. Strided
Convs, Convs of at most FEW_CHANNELS input channels, and pads larger than the dilated kernel use
ConvTranspose on the same weight; where the spatial sizes are known at run time only, its end is
cut or zero-padded to the input's size then.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..emitter import static_dims
from . import Linear, linear_op


FEW_CHANNELS = 8


def forward(e, node, x, w, b):
    return e.Conv(x, w, b, **node.attrs)


def transpose(e, node, dy, w):
    x, y = node.inputs[0], node.outputs[0]
    _, channels_per_group, *kernel = static_dims(w, "Conv's transpose")
    n = len(kernel)
    strides = node.attrs.get("strides", [1] * n)
    dilations = node.attrs.get("dilations", [1] * n)
    pads = node.attrs.get("pads", [0] * 2 * n)
    group = node.attrs.get("group", 1)
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ValueError("auto_pad SAME_* should have been made explicit by canonicalize")
    # Few input channels (an image's first layer): the flipped Conv would have as few output channels,
    # which ONNX Runtime's blocked Conv kernels pad out; its ConvTranspose is 1.1-3.7x faster there
    # (measured: 1-8 channels; from 16 on the Conv is 1.3-2.5x faster).
    few_channels = group == 1 and channels_per_group <= FEW_CHANNELS
    if all(s == 1 for s in strides) and not few_channels:
        conv_pads = [(k - 1) * d - p for k, d, p in zip(kernel * 2, dilations * 2, pads)]
        if min(conv_pads) >= 0:
            return e.Conv(dy, flipped_transpose(e, w, group, n), pads=conv_pads, dilations=dilations, group=group)
    if not (_static(x) and _static(y)):  # spatial dims known at run time only
        return fit_to(e, e.ConvTranspose(dy, w, strides=strides, dilations=dilations, pads=pads[:n] + [0] * n,
                                         group=group), x, n)
    begin, end, extra = transpose_pads(static_dims(x, "Conv's transpose", 2), static_dims(y, "Conv's transpose", 2),
                                       kernel, strides, dilations, pads[:n])
    return e.ConvTranspose(dy, w, strides=strides, dilations=dilations, pads=begin + end,
                           output_padding=extra, group=group)


def _static(t) -> bool:
    return t.shape is not None and all(isinstance(d, (int, np.integer)) for d in t.shape[2:])


def fit_to(e, g, x, n: int):
    """g, a strided window op's transpose with the forward's begin pads and no end pads (it spans the
    input positions up to the last one a window reaches), cut or zero-extended at the end of each
    spatial axis to x's size: what transpose_pads does for static sizes, at run time (Pad takes
    negative pads as cuts)."""
    spatial = e.ints(list(range(2, 2 + n)))
    missing = e.Sub(e.Gather(e.Shape(x), spatial, axis=0), e.Gather(e.Shape(g), spatial, axis=0))
    return e.Pad(g, e.Concat(e.ints([0] * (n + 2) + [0, 0]), missing, axis=0))


def flipped_transpose(e, w, group: int, n: int):
    """[C_out, C_in/g, *k] -> [C_in, C_out/g, *k] per group, taps reversed on every spatial axis:
    the weight whose stride-1 Conv is the adjoint of w's. A constant when w is one."""
    cout, cin_g, *k = static_dims(w, "Conv's transpose")
    if isinstance(w, gs.Constant):
        t = w.values.reshape(group, cout // group, cin_g, *k).swapaxes(1, 2).reshape(group * cin_g, cout // group, *k)
        return e.const(np.flip(t, axis=tuple(range(2, 2 + n))))
    t = e.Reshape(w, e.ints([group, cout // group, cin_g, *k]))
    t = e.Reshape(e.Transpose(t, perm=[0, 2, 1, *range(3, 3 + n)]), e.ints([group * cin_g, cout // group, *k]))
    lowest = np.iinfo(np.int64).min
    return e.Slice(t, e.ints([-1] * n), e.ints([lowest] * n), e.ints(range(2, 2 + n)), e.ints([-1] * n))


def transpose_pads(in_dims, out_dims, kernel, strides, dilations, pads_begin):
    """ConvTranspose pads and output_padding that map a strided window op's output back onto its input.

    The begin pads must be the forward's; the end is cropped or extended so that the result has the
    input's size exactly (inputs no window reached get zero gradient).
    """
    end, extra = [], []
    for size, out, k, s, d, pb in zip(in_dims, out_dims, kernel, strides, dilations, pads_begin):
        reach = s * (out - 1) + (k - 1) * d + 1 - pb  # input positions the last window reaches
        end.append(max(0, reach - size))
        extra.append(size - (reach - end[-1]))
    return list(pads_begin), end, extra


def conv_linear(node):
    return Linear(x=0, weight=1, bias=2 if len(node.inputs) > 2 else None, forward=forward, transpose=transpose)


linear_op("Conv", conv_linear, groups=("convolution",))
