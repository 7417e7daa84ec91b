"""The propagation rules, each registered once with everything the rest of nnxplain needs to know:

    @register("gamma", ops=LINEAR_OPS, description="...", params={"gamma": number(0.25, ...)},
              times_input=True)
    def lrp_gamma(e, node, dy, gamma, ignore_bias): ...

A rule is `fn(e, node, *dys, **params, **needs) -> [dx per input]`. Its parameters are declared with
their types, ranges and defaults (nnxplain.params.Spec; a Spec without a default is required), and
method files, `--param` and create_analyzer's keywords are all converted and checked through that
declaration. `needs` names what the compiler hands the rule besides its parameters ("patterns": the
fitted patterns; "reference": the reference input's forward pass; "zero_where_zero": the tensors whose
relevance is zero wherever they are, see lrp.zero_where_zero). `times_input`: the relevance the rule
gives its computed inputs is that input times something, so it is zero wherever the input is zero
(what lets the compiler read a linear layer's output through its ReLU).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .params import REQUIRED, Spec


@dataclass(frozen=True)
class Rule:
    fn: Callable
    ops: frozenset | None   # op types the rule applies to; None: every op with a gradient adapter
    description: str
    params: dict[str, Spec] = field(default_factory=dict)
    needs: tuple = ()       # what the compiler hands the rule besides its parameters
    times_input: bool = False
    check: Callable[[dict], None] | None = None  # what the parameters must satisfy together (raises ValueError)

    def defaults(self) -> dict:
        return {k: spec.default for k, spec in self.params.items() if spec.default is not REQUIRED}

    def required(self) -> list[str]:
        return [k for k, spec in self.params.items() if spec.default is REQUIRED]

    def call(self, e, node, dys, params: dict, needs: dict):
        """The rule applied to one node, with its defaults where `params` gives no value."""
        return self.fn(e, node, *dys, **{**self.defaults(), **params}, **needs)


RULES: dict[str, Rule] = {}


def register(name: str, ops, description: str, params: dict[str, Spec] | None = None, needs: tuple = (),
             times_input: bool = False, check: Callable[[dict], None] | None = None):
    """Decorator: register `fn` as rule `name`."""
    def add(fn):
        if name in RULES:
            raise ValueError(f"rule '{name}' is registered twice")
        RULES[name] = Rule(fn, None if ops is None else frozenset(ops), description, dict(params or {}),
                           tuple(needs), times_input, check)
        return fn
    return add
