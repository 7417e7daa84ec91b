"""auto_pad SAME_UPPER / SAME_LOWER / VALID become explicit pads. It must apply (the gradients read
explicit pads), and SAME needs the spatial dims known when the model is compiled. Not ConvTranspose,
whose SAME pads follow other rules (its record refuses auto_pad SAME_*)."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from ..ops import with_attribute
from . import Reason, Rewrite


def matches(graph: gs.Graph, node: gs.Node) -> bool:
    return node.op in with_attribute("auto_pad") - {"ConvTranspose"} and node.attrs.get("auto_pad", "NOTSET") != "NOTSET"


def check(graph: gs.Graph, node: gs.Node):
    mode = node.attrs["auto_pad"]
    kernel = node.attrs.get("kernel_shape") or list(node.inputs[1].shape[2:])
    n = len(kernel)
    if mode == "VALID":
        return [0] * 2 * n
    dims = (node.inputs[0].shape or [])[2:]
    if len(dims) != n or not all(isinstance(d, int) for d in dims):
        return Reason(f"auto_pad {mode} needs static spatial dims")
    strides = node.attrs.get("strides", [1] * n)
    dilations = node.attrs.get("dilations", [1] * n)
    begin, end = [], []
    for size, k, s, d in zip(dims, kernel, strides, dilations):
        total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else large)
        end.append(large if mode == "SAME_UPPER" else small)
    return begin + end


def rewrite(graph: gs.Graph, node: gs.Node, pads: list[int]):
    node.attrs["auto_pad"] = "NOTSET"
    node.attrs["pads"] = pads


REWRITE = Rewrite("explicit_pads", matches, check, rewrite, must_apply=True, description=__doc__)
