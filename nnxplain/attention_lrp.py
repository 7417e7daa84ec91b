"""The rules of attention-aware LRP (AttnLRP, Achtibat et al. 2024; CP-LRP, Ali et al. 2022) in their
gradient-times-input form, the form of LXT's efficient mode: a method that uses them (rules/attn_lrp.toml,
rules/cp_lrp.toml) starts the backward pass from the explained output's value and multiplies what
arrives at the input by the input. Through a layer that is linear for relevance the gradient then
IS the LRP-0 relevance (R_i = x_i w_ij / z_j R_j, the bias absorbing its share), so each rule here
only says how a nonlinear node's gradient must change for the input times it to be the rule's relevance:

  identity_implicit  an elementwise nonlinearity y = f(x) passes relevance unchanged (AttnLRP Eq. 9):
                     its gradient becomes y / (x + epsilon), so x times it is y times the incoming one.
  product            a product of two tensors that both depend on the explained input (attention
                     scores q k^T, attention times values, a squeeze-excite gate): each operand gets
                     half of the product's relevance (the uniform rule, AttnLRP Eq. 7): the gradient
                     halved. A product with one such operand is linear (a scale): the plain gradient.
                     A self-gated activation written as a product, x times a pointwise function of
                     x (SiLU x * sigmoid(x), GELU x * (1 + erf(x / sqrt 2)) / 2 and its tanh form,
                     Mish, as exporters decompose them), is an elementwise nonlinearity, not a
                     product: the gate is held constant, which is the identity rule on the whole.
  constant_std       a normalization (LayerNormalization) with its standard deviation held
                     constant, which makes it linear for relevance (AttnLRP's rule, LXT's
                     stop_gradient on the std; CP-LRP's as well).
  stop               no relevance through the node (CP-LRP's attention weights, treated as constants:
                     nothing reaches the queries and keys through the Softmax).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .emitter import shape
from .ops import VJP, having
from .ops._normalize import mean, standardized
from .params import Spec, number
from .rule_registry import register

ACTIVATIONS = having(category="activation")
PRODUCTS = frozenset({"Mul", "MatMul", "Einsum", "Div"})
NORMALIZATIONS = frozenset({"LayerNormalization"})
LIVE = ("live",)  # the names of the tensors that depend on the explained input (compiler.explain)

# ops through which a tensor stays a pointwise function of one tensor, with a constant operand at most
POINTWISE = having(pointwise=True) | {"Add", "Sub", "Mul", "Div", "Pow", "Cast", "Neg"}
SCALES = {"Mul", "Div", "Identity", "Cast", "Neg"}  # x times a constant (or x itself) stays "x, scaled"


@register("identity_implicit", ACTIVATIONS, "AttnLRP's identity rule in gradient x input form: y / (x + epsilon)",
          params={"epsilon": number(1e-10, lambda v: v >= 0, "a finite number >= 0")})
def identity_implicit(e, node, dy, epsilon: float):
    """y = f(x) elementwise: the gradient f(x) / (x + epsilon) (LXT's identity_rule_implicit, epsilon
    added as it adds it), so that x times the gradient passes y's relevance on unchanged."""
    x, y = node.inputs[0], node.outputs[0]
    return [e.Mul(dy, e.Div(y, e.Add(x, np.array(epsilon, np.float32))))] + [None] * (len(node.inputs) - 1)


@register("product", PRODUCTS, "uniform rule: each computed operand of a product gets half its relevance; "
                               "a self-gated activation (x * g(x)) passes it to x",
          params={"share": Spec(str, lambda v: v in ("uniform", "full"), "uniform or full", "uniform")},
          needs=LIVE)
def product(e, node, dy, share: str, live: set):
    """A product (or quotient): with one operand depending on the input, a scale (the gradient); x times a pointwise
    function of x, a self-gated activation (the gate held constant); otherwise two operands that both
    depend on it: `share` "uniform" halves the gradient (AttnLRP), "full" keeps it (CP-LRP, whose
    attention weights carry no relevance back anyway)."""
    computed = [i for i, t in enumerate(node.inputs) if t.name in live]
    if len(computed) < 2:
        return VJP[node.op](e, node, dy)
    if node.op == "Div":
        raise ValueError("no AttnLRP rule divides by a tensor that depends on the input (a normalization "
                         "that canonicalization did not fuse into LayerNormalization?)")
    if node.op == "Mul":
        gated = self_gated(node)
        if gated is not None:
            dxs = VJP["Mul"](e, node, dy)
            return [dx if i == gated else None for i, dx in enumerate(dxs)]
    return VJP[node.op](e, node, e.Mul(dy, np.array(0.5, np.float32)) if share == "uniform" else dy)


@register("constant_std", NORMALIZATIONS, "a normalization with its standard deviation held constant (linear)")
def constant_std(e, node, dy):
    """LayerNormalization y = (x - mean(x)) / std * scale + bias over the axes from `axis` on, with
    std = sqrt(var(x) + epsilon) held constant: dx = (g - mean(g)) / std, g = dy * scale."""
    x, scale = node.inputs[0], node.inputs[1]
    rank = len(shape(x))
    axes = list(range(node.attrs.get("axis", -1) % rank, rank))
    _, inverse_std = standardized(e, x, axes, node.attrs.get("epsilon", 1e-5))
    g = e.Mul(dy, scale)
    return [e.Mul(e.Sub(g, mean(e, g, axes, g)), inverse_std)] + [None] * (len(node.inputs) - 1)


@register("stop", None, "no relevance passes (CP-LRP: the attention weights are constants)")
def stop(e, node, *dys):
    return [None] * len(node.inputs)


# ------------------------------------------------------------------------------------- self-gates

def self_gated(node: gs.Node) -> int | None:
    """For a Mul that computes x times a pointwise function of x (one operand x, or x times a constant;
    the other computed from x by pointwise ops alone), the index of the x operand; else None."""
    for i, operand in enumerate(node.inputs):
        if id(scaled_root(operand)) in pointwise_ancestors(node.inputs[1 - i]):
            return i
    return None


def pointwise_ancestors(t: gs.Tensor, depth: int = 16) -> set[int]:
    """ids of t and of the tensors t is computed from through pointwise ops (whose other operands
    are constants or such tensors too), up to `depth` ops back."""
    found, frontier = {id(t)}, [t]
    for _ in range(depth):
        frontier = [i for t in frontier if t.inputs and t.inputs[0].op in POINTWISE
                    for i in t.inputs[0].inputs if not isinstance(i, gs.Constant) and id(i) not in found]
        found.update(id(i) for i in frontier)
        if not frontier:
            break
    return found


def scaled_root(t: gs.Tensor) -> gs.Tensor:
    """x where t is x times or divided by constants (or negated, cast, an Identity of it); else t."""
    while t.inputs and t.inputs[0].op in SCALES:
        producer = t.inputs[0]
        computed = [i for i in producer.inputs if not isinstance(i, gs.Constant)]
        if len(computed) != 1 or (producer.op == "Div" and producer.inputs[0] is not computed[0]):
            break
        t = computed[0]
    return t
