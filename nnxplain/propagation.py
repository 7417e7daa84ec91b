"""Propagation rules: how relevance crosses one node, as `rule(e, node, *dys, **params) -> [dx per input]`.

`gradient` is every op's own vector-Jacobian product (from nnxplain.ops). The other rules replace it
at the nodes a method maps them to. A rule lists the op types it can apply to (None: any op that
has a gradient adapter), so a method that maps it elsewhere fails with a clear message. Every rule is
registered in nnxplain.rule_registry: the gradient family here, the LRP family in nnxplain.lrp
(imported here, so RULES below is the whole table).
"""
from __future__ import annotations

import numpy as np

from . import attention_lrp, lrp  # noqa: F401  (register the LRP rules and attention-aware LRP's)
from .errors import UnsupportedError
from .ops import LINEAR, VJP, having
from .params import Spec, number
from .rule_registry import RULES, Rule, register  # noqa: F401  (RULES and Rule: their home for callers)

ACTIVATIONS = having(category="activation")
LINEAR_OPS = having(category="linear")


@register("gradient", None, "the op's gradient (vector-Jacobian product)")
def gradient(e, node, *dys):
    if node.op not in VJP:
        raise UnsupportedError(f"node '{node.name}': op {node.op} has no gradient adapter (supported: "
                               f"{', '.join(sorted(VJP))})")
    return VJP[node.op](e, node, *dys)


@register("deconvnet", {"Relu"}, "ReLU passes the positive part of the signal")
def deconvnet(e, node, dy):
    """Zeiler & Fergus: pass only the positive part of the signal, ignoring the forward ReLU's mask."""
    return [e.Relu(dy)]


@register("guided_backprop", {"Relu"}, "ReLU gradient of the positive part of the signal")
def guided_backprop(e, node, dy):
    """Springenberg et al.: the ReLU's gradient applied to the positive part of the signal."""
    return VJP["Relu"](e, node, e.Relu(dy))


@register("pattern_net", LINEAR_OPS, "transpose with the layer's patterns", needs=("patterns",))
def pattern_net(e, node, dy, patterns):
    """PatternNet (Kindermans et al. 2018): back-project the signal through the layer's patterns a
    in place of its weights w."""
    return _transpose_with(e, node, dy, patterns.weight(node, "net"))


@register("pattern_attribution", LINEAR_OPS, "transpose with weights times patterns", needs=("patterns",))
def pattern_attribution(e, node, dy, patterns):
    """PatternAttribution: the backward pass with the weights times the patterns, w * a."""
    return _transpose_with(e, node, dy, patterns.weight(node, "attribution"))


def _transpose_with(e, node, dy, weight):
    lin = LINEAR[node.op](node)
    dxs = [None] * len(node.inputs)
    dxs[lin.x] = lin.transpose(e, node, dy, e.const(weight))
    return dxs


@register("rescale", ACTIVATIONS, "DeepLIFT rescale: (y - y_ref) / (x - x_ref), gradient where x = x_ref",
          params={"eps": number(1e-10, lambda v: v > 0, "a finite number > 0")}, needs=("reference",))
def rescale(e, node, dy, reference, eps: float):
    """DeepLIFT's rescale rule (Shrikumar et al. 2017) for an elementwise activation: the multiplier
    (y - y_ref) / (x - x_ref), the difference quotient between the input and the reference input's
    forward pass; where |x - x_ref| < eps, the gradient (as Captum does)."""
    x, y = node.inputs[0], node.outputs[0]
    if x.name not in reference or y.name not in reference:
        raise ValueError("the reference forward pass does not reach this node")
    delta_in = e.Sub(x, reference[x.name])
    delta_out = e.Sub(y, reference[y.name])
    small = e.Less(e.Abs(delta_in), e.const(np.array(eps, np.float32)))
    safe_in = e.Where(small, e.const(np.array(1.0, np.float32)), delta_in)
    by_rescale = e.Mul(dy, e.Div(delta_out, safe_in))
    by_gradient = gradient(e, node, dy)[0]
    return [e.Where(small, by_gradient, by_rescale)] + [None] * (len(node.inputs) - 1)


@register("refuse", None, "an error naming the node and `reason`: the method does not support it",
          params={"reason": Spec(str, None, "a string", "the method does not apply to this op")})
def refuse(e, node, *dys, reason: str):
    """A node the method does not support: an error naming the node and the reason (method files use
    it where a strict method would otherwise only say that no entry matches)."""
    raise ValueError(reason)

