"""Conv (any rank, strides, pads, dilations, groups): the transpose is ConvTranspose on the same weight."""
from __future__ import annotations

from ..emitter import static_dims
from . import Linear, linear, vjp


def forward(e, node, x, w, b):
    return e.Conv(x, w, b, **node.attrs)


def transpose(e, node, dy, w):
    x, y = node.inputs[0], node.outputs[0]
    kernel = static_dims(w, "Conv's transpose", 2)
    n = len(kernel)
    strides = node.attrs.get("strides", [1] * n)
    dilations = node.attrs.get("dilations", [1] * n)
    pads = node.attrs.get("pads", [0] * 2 * n)
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ValueError("auto_pad SAME_* should have been made explicit by canonicalize")
    begin, end, extra = transpose_pads(static_dims(x, "Conv's transpose", 2), static_dims(y, "Conv's transpose", 2),
                                       kernel, strides, dilations, pads[:n])
    return e.ConvTranspose(dy, w, strides=strides, dilations=dilations, pads=begin + end,
                           output_padding=extra, group=node.attrs.get("group", 1))


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


linear("Conv")(conv_linear)


@vjp("Conv")
def conv_vjp(e, node, dy):
    return [transpose(e, node, dy, node.inputs[1]), None, None][:len(node.inputs)]
