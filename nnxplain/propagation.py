"""Propagation rules: how relevance crosses one node, as `rule(e, node, *dys, **params) -> [dx per input]`.

`gradient` is every op's own vector-Jacobian product (from nnxplain.ops). The other rules replace it
at the nodes a method maps them to. A rule lists the op types it can apply to (None: any op that
has a gradient adapter), so a method that maps it elsewhere fails with a clear message.
"""
from __future__ import annotations

import inspect
from typing import Callable, NamedTuple

from .errors import UnsupportedError
from .ops import VJP


class Rule(NamedTuple):
    fn: Callable
    ops: frozenset | None  # op types the rule applies to; None: every op with a gradient adapter
    description: str


def gradient(e, node, *dys):
    if node.op not in VJP:
        raise UnsupportedError(f"node '{node.name}': op {node.op} has no gradient adapter (supported: "
                               f"{', '.join(sorted(VJP))})")
    return VJP[node.op](e, node, *dys)


def deconvnet(e, node, dy):
    """Zeiler & Fergus: pass only the positive part of the signal, ignoring the forward ReLU's mask."""
    return [e.Relu(dy)]


def guided_backprop(e, node, dy):
    """Springenberg et al.: the ReLU's gradient applied to the positive part of the signal."""
    return VJP["Relu"](e, node, e.Relu(dy))


RULES: dict[str, Rule] = {
    "gradient": Rule(gradient, None, "the op's gradient (vector-Jacobian product)"),
    "deconvnet": Rule(deconvnet, frozenset({"Relu"}), "ReLU passes the positive part of the signal"),
    "guided_backprop": Rule(guided_backprop, frozenset({"Relu"}),
                            "ReLU gradient of the positive part of the signal"),
}


def rule_params(fn: Callable) -> dict:
    """A rule function's parameters (those after e, node and the relevance) with their defaults."""
    return {p.name: p.default for p in list(inspect.signature(fn).parameters.values())[2:]
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.default is not p.empty}


from . import lrp  # noqa: E402,F401  (registers the LRP rules into RULES)
