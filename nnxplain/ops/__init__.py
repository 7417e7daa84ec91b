"""Op records: one module per ONNX op, each registering the one record that says everything the
compiler knows about the op. Adding an op is adding one module here (the package is scanned, there
is no list to edit) plus its test in tests/test_ops.py.

A record holds
  - the op's gradient, `vjp(e, node, *dys) -> list` with one entry per node input: the gradient for
    that input, or None where the input is not differentiable (weights, shapes, indices). `dys`
    holds one gradient per node output (None for outputs nothing depends on);
  - for a linear layer, its linear view (`Linear`: forward and transpose with a given weight, so
    propagation rules can run it with modified weights). Its gradient follows from the transpose
    (JAX's deflinear), so a linear op defines the transpose once;
  - its facts, from which every op set elsewhere is derived (`having`, `groups`, `zero_preserving`,
    `nonnegative_output`):
      category         "linear" (a layer linear in its activation input for a given weight),
                       "activation" (pointwise nonlinearity), "routing" (moves or selects input
                       elements: reshapes, slices, max pooling), "proportional" (the output is a sum
                       of its computed inputs' contributions: Add, average pooling; Mul / Div by a
                       constant), "nonlinear" (nonlinear and not pointwise: normalizations, Softmax, a
                       norm of a tensor; gradient methods apply, LRP methods refuse the node until a
                       propagation rule names the op) or "not_differentiable" (shapes, indices,
                       comparisons: no gradient)
      pointwise        each output element depends on the input element at the same place only, so
                       relevance may pass through unchanged
      zero_preserving  f(0) = 0: True, False, or a test of the node (Clip: 0 inside its range)
      nonnegative      whether the output is >= 0: `ALWAYS`, `NEVER` (not known), `IF_INPUT` /
                       `IF_INPUTS` (when its data input / all its inputs are), or a test of its own
      groups           names a method file's patterns can use for the op besides its category

Ops that ONNX defines by a function body get a record of their own rather than being expanded when
they are pointwise activations (Softplus, Elu, Mish, Softsign, Selu, Celu, HardSigmoid, HardSwish,
ThresholdedRelu, Gelu, PRelu with its slope per channel): expanded, LRP would
see Exp / Log / Where / a Mul of two computed tensors instead of one activation that relevance passes
through, and the gradient would take several nodes where one formula does. LayerNormalization and
Softmax are not pointwise: each needs a record with its own facts (and rules) rather than the
expansion's ReduceMean / Div of computed tensors. Each record's docstring says why for its op.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass, replace
from typing import Callable, NamedTuple

import onnx

CATEGORIES = ("linear", "activation", "routing", "proportional", "nonlinear", "not_differentiable")
GROUP_CATEGORIES = ("activation", "routing", "proportional", "nonlinear")  # categories a method file can name as groups


class Linear(NamedTuple):
    """A node that is linear in its activation input x: y = forward(x, W, b)."""
    x: int                   # input index of the activation
    weight: int              # input index of the weight
    bias: int | None         # input index of the bias, None if the op has none
    forward: Callable        # (e, node, x, W, b) -> y
    transpose: Callable      # (e, node, dy, W) -> dx, the adjoint of x -> forward(x, W, 0)


# The common answers to "is this node's output >= 0?", given `nonnegative(tensor)` for its inputs.

def ALWAYS(node, nonnegative) -> bool:
    return True


def NEVER(node, nonnegative) -> bool:  # not known to be
    return False


def IF_INPUT(node, nonnegative) -> bool:  # when its data input is
    return nonnegative(node.inputs[0])


def IF_INPUTS(node, nonnegative) -> bool:  # when all its inputs are
    return all(nonnegative(t) for t in node.inputs)


@dataclass(frozen=True)
class Op:
    """One op's record: its gradient, its linear view and its facts (see the module docstring)."""
    name: str
    category: str
    vjp: Callable | None = None
    linear: Callable | None = None           # node -> Linear, or None where this node is not linear
    pointwise: bool = False
    zero_preserving: bool | Callable = False
    nonnegative: Callable = NEVER
    groups: tuple[str, ...] = ()


RECORDS: dict[str, Op] = {}
VJP: dict[str, Callable] = {}      # op type -> its gradient (the records' vjp, for the rules)
LINEAR: dict[str, Callable] = {}   # op type -> its linear view (node -> Linear or None)


def register(record: Op) -> Op:
    """Add an op's record to the table (its category joins its groups where method files may name it)."""
    if record.category not in CATEGORIES:
        raise ValueError(f"op {record.name}: category '{record.category}' is not one of {', '.join(CATEGORIES)}")
    if record.name in RECORDS:
        raise ValueError(f"op {record.name} is registered twice")
    if record.category in GROUP_CATEGORIES:
        record = replace(record, groups=(record.category, *record.groups))
    RECORDS[record.name] = record
    having.cache_clear()
    with_attribute.cache_clear()
    if record.vjp is not None:
        VJP[record.name] = record.vjp
    if record.linear is not None:
        LINEAR[record.name] = record.linear
    return record


def op(name: str, category: str, **facts):
    """Decorator: register the decorated function as the gradient of op `name`."""
    def register_vjp(fn):
        register(Op(name, category, vjp=fn, **facts))
        return fn
    return register_vjp


def linear_op(name: str, view: Callable, vjp: Callable | None = None, **facts) -> Op:
    """Register a linear layer from its linear view alone: its gradient with respect to the activation
    input is the transpose applied to the node's own weight (JAX's deflinear); other inputs (weight,
    bias) get none. An op that is also differentiated with respect to its weight passes its own `vjp`."""
    def transpose_vjp(e, node, dy):
        lin = view(node)
        dxs = [None] * len(node.inputs)
        dxs[lin.x] = lin.transpose(e, node, dy, node.inputs[lin.weight])
        return dxs
    return register(Op(name, "linear", vjp=vjp or transpose_vjp, linear=view, **facts))


def not_differentiable(name: str) -> Op:
    """Register an op whose outputs carry no gradient whatever its inputs (shapes, indices, comparisons)."""
    return register(Op(name, "not_differentiable"))


@functools.cache
def having(**facts) -> frozenset[str]:
    """The op types whose records have all the given facts, e.g. having(category="activation")."""
    return frozenset(name for name, r in RECORDS.items() if all(getattr(r, k) == v for k, v in facts.items()))


@functools.cache
def with_attribute(name: str) -> frozenset[str]:
    """The op types with a record whose ONNX schema declares attribute `name` (e.g. auto_pad)."""
    return frozenset(op_type for op_type in RECORDS if name in onnx.defs.get_schema(op_type).attributes)


def groups() -> dict[str, set[str]]:
    """Group name -> the op types in it (the groups a method file's patterns can name)."""
    out: dict[str, set[str]] = {}
    for r in RECORDS.values():
        for g in r.groups:
            out.setdefault(g, set()).add(r.name)
    return out


def zero_preserving(node) -> bool:
    """Whether node's output is 0 wherever its (data) input is 0."""
    r = RECORDS.get(node.op)
    return r is not None and (r.zero_preserving(node) if callable(r.zero_preserving) else r.zero_preserving)


def nonnegative_output(node, nonnegative: Callable) -> bool:
    """Whether node's output is provably >= 0, given `nonnegative(tensor)` for its inputs."""
    r = RECORDS.get(node.op)
    return r is not None and r.nonnegative(node, nonnegative)


for _module in pkgutil.iter_modules(__path__):  # every module here registers its op (helpers start with "_")
    importlib.import_module(f"{__name__}.{_module.name}")
