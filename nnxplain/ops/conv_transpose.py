"""ConvTranspose (any rank, strides, pads, dilations, groups, output_padding), a linear layer: it is
the adjoint of the Conv with the same weight, so its transpose (input gradient) is that Conv, with
the same strides, dilations and group, and its begin pads; the end pads lose output_padding (the
trailing outputs that padding adds read no input: their gradient is cropped where the pad would
go negative).

auto_pad SAME_* pads split the total as the specification says for ConvTranspose (ONNX Runtime
follows it; explicit_pads, whose split is Conv's, leaves ConvTranspose alone), needing the spatial
dims when the graph is compiled. A node with output_shape is refused.
The LRP rules apply (they modify the weight elementwise and run this forward and transpose);
PatternNet has no rows of its [C_in, C_out / group, *k] weight yet and refuses the node, and a
BatchNormalization after it is not folded into it.
"""
from __future__ import annotations

from ..emitter import static_dims
from . import Linear, linear_op


def forward(e, node, x, w, b):
    return e.ConvTranspose(x, w, b, **node.attrs)


def transpose(e, node, dy, w):
    kernel = static_dims(w, "ConvTranspose's transpose", 2)
    n = len(kernel)
    if "output_shape" in node.attrs:
        raise ValueError("output_shape is not supported (give explicit pads and output_padding)")
    strides, dilations = node.attrs.get("strides", [1] * n), node.attrs.get("dilations", [1] * n)
    extra = node.attrs.get("output_padding", [0] * n)
    pads = same_pads(node, kernel, strides, dilations, extra) or node.attrs.get("pads", [0] * 2 * n)
    end = [p - o for p, o in zip(pads[n:], extra)]
    crop = [max(0, -p) for p in end]
    if any(crop):  # outputs that output_padding added past the reach of every input: no gradient to x
        dy = e.Slice(dy, e.ints([0] * n), e.ints([-c if c else 2 ** 62 for c in crop]), e.ints(range(2, 2 + n)))
    return e.Conv(dy, w, strides=strides, dilations=dilations, pads=list(pads[:n]) + [max(0, p) for p in end],
                  group=node.attrs.get("group", 1))


def same_pads(node, kernel, strides, dilations, extra) -> list[int] | None:
    """The pads auto_pad SAME_UPPER / SAME_LOWER chooses (the output is the input times the stride;
    the specification's split of the total, which ONNX Runtime follows), [0...] for VALID, None for
    NOTSET (the node's own pads)."""
    mode = node.attrs.get("auto_pad", "NOTSET")
    if mode == "NOTSET":
        return None
    if mode == "VALID":
        return [0] * 2 * len(kernel)
    dims = static_dims(node.inputs[0], f"ConvTranspose's auto_pad {mode}", 2)
    begin, end = [], []
    for size, k, s, d, o in zip(dims, kernel, strides, dilations, extra):
        total = s * (size - 1) + o + (k - 1) * d + 1 - size * s
        small, large = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else large)
        end.append(large if mode == "SAME_UPPER" else small)
    return begin + end


def conv_transpose_linear(node):
    return Linear(x=0, weight=1, bias=2 if len(node.inputs) > 2 and node.inputs[2].name else None,
                  forward=forward, transpose=transpose)


linear_op("ConvTranspose", conv_transpose_linear, groups=("convolution",))
