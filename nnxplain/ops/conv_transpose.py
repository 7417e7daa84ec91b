"""ConvTranspose (any rank, strides, pads, dilations, groups, output_padding), a linear layer: it is
the adjoint of the Conv with the same weight, so its transpose (input gradient) is that Conv, with
the same strides, dilations and group, and its begin pads; the end pads lose output_padding (the
trailing outputs that padding adds read no input: their gradient is cropped where the pad would
go negative).

auto_pad SAME_* and output_shape make ONNX Runtime choose the pads, by rules that have differed
between versions and the specification: such a node is refused (explicit_pads leaves it alone).
LRP rules and PatternNet have no view of its [C_in, C_out / group, *k] weight yet
(nnxplain.layer.LinearLayer refuses it), so they refuse the node; gradient methods apply.
"""
from __future__ import annotations

from ..emitter import static_dims
from . import Linear, linear_op


def forward(e, node, x, w, b):
    return e.ConvTranspose(x, w, b, **node.attrs)


def transpose(e, node, dy, w):
    kernel = static_dims(w, "ConvTranspose's transpose", 2)
    n = len(kernel)
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ValueError(f"auto_pad {node.attrs['auto_pad']} is not supported (give explicit pads)")
    if "output_shape" in node.attrs:
        raise ValueError("output_shape is not supported (give explicit pads and output_padding)")
    pads = node.attrs.get("pads", [0] * 2 * n)
    extra = node.attrs.get("output_padding", [0] * n)
    end = [p - o for p, o in zip(pads[n:], extra)]
    crop = [max(0, -p) for p in end]
    if any(crop):  # outputs that output_padding added past the reach of every input: no gradient to x
        dy = e.Slice(dy, e.ints([0] * n), e.ints([-c if c else 2 ** 62 for c in crop]), e.ints(range(2, 2 + n)))
    return e.Conv(dy, w, strides=node.attrs.get("strides", [1] * n), dilations=node.attrs.get("dilations", [1] * n),
                  pads=list(pads[:n]) + [max(0, p) for p in end], group=node.attrs.get("group", 1))


def conv_transpose_linear(node):
    return Linear(x=0, weight=1, bias=2 if len(node.inputs) > 2 and node.inputs[2].name else None,
                  forward=forward, transpose=transpose)


linear_op("ConvTranspose", conv_transpose_linear, groups=("convolution",))
