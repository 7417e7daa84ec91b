"""LayerNormalization as exporters for opsets before 17 write it, one node per step,

    d = x - ReduceMean(x);  y = d / Sqrt(ReduceMean(Pow(d, 2)) + epsilon)  [* scale]  [+ bias]

(the two means over the same trailing axes, epsilon, scale and bias constants), becomes one
LayerNormalization node: its record has the op's gradient, and LRP methods then see one
normalization to refuse (or, later, to give a rule) rather than a Div of two computed tensors.

The pattern is a Div by a Sqrt; the check walks back from it and says which step differs where
the rest is not that LayerNormalization (another exponent, other axes, a step whose output is read
elsewhere too, a computed scale)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from . import Reason, Rewrite, is_output, producer


@dataclass
class Match:
    x: gs.Tensor
    axis: int
    epsilon: float
    scale: np.ndarray
    bias: np.ndarray | None
    last: gs.Node                 # the node whose output the LayerNormalization takes over
    steps: list[gs.Node]          # every node of the pattern


def matches(graph: gs.Graph, node: gs.Node) -> bool:
    sqrt = producer(node.inputs[1]) if node.op == "Div" else None
    return sqrt is not None and sqrt.op == "Sqrt"


def check(graph: gs.Graph, div: gs.Node) -> Match | Reason:
    sqrt = producer(div.inputs[1])
    add = producer(sqrt.inputs[0])
    if add is None or add.op != "Add":
        return Reason("the Sqrt it divides by is not of a variance plus epsilon (no Add before it)")
    epsilon, variance = _constant_and_other(add)
    if epsilon is None or epsilon.size != 1:
        return Reason(f"node '{add.name}' (Add) adds no constant epsilon to the variance")
    mean_of_squares = producer(variance)
    pow_ = producer(mean_of_squares.inputs[0]) if mean_of_squares is not None and mean_of_squares.op == "ReduceMean" else None
    if pow_ is None or pow_.op != "Pow":
        return Reason("the variance is not a ReduceMean of a Pow")
    exponent = pow_.inputs[1]
    if not isinstance(exponent, gs.Constant) or exponent.values.size != 1 or float(exponent.values.reshape(-1)[0]) != 2:
        return Reason(f"node '{pow_.name}' (Pow) does not square (its exponent is not the constant 2)")
    centered = div.inputs[0]
    if pow_.inputs[0] is not centered:
        return Reason(f"node '{pow_.name}' (Pow) squares '{pow_.inputs[0].name}', not the '{centered.name}' it divides")
    sub = producer(centered)
    mean = producer(sub.inputs[1]) if sub is not None and sub.op == "Sub" else None
    if mean is None or mean.op != "ReduceMean" or mean.inputs[0] is not sub.inputs[0]:
        return Reason(f"'{centered.name}' is not x minus a ReduceMean of x")
    x = sub.inputs[0]
    rank = len(x.shape) if x.shape is not None else None
    axes = [_axes(mean, rank), _axes(mean_of_squares, rank)]
    if rank is None or None in axes:
        return Reason("the ReduceMeans' axes or the input's rank are not known")
    if axes[0] != axes[1]:
        return Reason(f"the two ReduceMeans reduce different axes ({axes[0]} and {axes[1]})")
    if not axes[0] or axes[0] != list(range(axes[0][0], rank)):
        return Reason(f"the ReduceMeans reduce axes {axes[0]}, not the trailing axes of the rank-{rank} input")
    steps = [mean, sub, pow_, mean_of_squares, add, sqrt, div]
    shared = _shared(graph, steps, [[sub], [pow_, div], [mean_of_squares], [add], [sqrt], [div]])
    if shared:
        return Reason(shared)
    normalized = x.shape[axes[0][0]:]
    if not all(isinstance(d, (int, np.integer)) for d in normalized):
        return Reason(f"the normalized dims {list(normalized)} are not all known")
    scale, bias, last = np.ones(normalized, np.float32), None, div
    for op in ("Mul", "Add"):  # the affine part, each step optional
        after = _only_user(graph, last)
        if after is None or after.op != op:
            break
        value, _ = _constant_and_other(after)
        if value is None or not _broadcasts_to(value.shape, normalized):
            break
        if op == "Mul":
            scale = np.broadcast_to(value.astype(np.float32), normalized).copy()
        else:
            bias = np.broadcast_to(value.astype(np.float32), normalized).copy()
        steps.append(after)
        last = after
    return Match(x, axes[0][0], float(epsilon.reshape(-1)[0]), scale, bias, last, steps)


def rewrite(graph: gs.Graph, div: gs.Node, m: Match):
    name = m.last.outputs[0].name
    inputs = [m.x, gs.Constant(name + "_ln_scale", m.scale)]
    if m.bias is not None:
        inputs.append(gs.Constant(name + "_ln_bias", m.bias))
    graph.nodes.append(gs.Node("LayerNormalization", (m.last.name or name) + "_fused", {"axis": m.axis, "epsilon": m.epsilon},
                               inputs, [m.last.outputs[0]]))
    for step in m.steps:
        step.outputs.clear()


def _constant_and_other(node: gs.Node):
    """(the values of the node's one constant input, its other input), or (None, None)."""
    a, b = node.inputs[:2]
    if isinstance(b, gs.Constant) and not isinstance(a, gs.Constant):
        return b.values, a
    if isinstance(a, gs.Constant) and not isinstance(b, gs.Constant):
        return a.values, b
    return None, None


def _axes(node: gs.Node, rank: int | None) -> list[int] | None:
    """The sorted nonnegative axes a keepdims ReduceMean reduces (attribute, or opset 18's input)."""
    if rank is None or not node.attrs.get("keepdims", 1):
        return None
    if "axes" in node.attrs:
        axes = node.attrs["axes"]
    elif len(node.inputs) > 1 and isinstance(node.inputs[1], gs.Constant):
        axes = node.inputs[1].values.reshape(-1).tolist()
    else:
        return None
    return sorted(int(a) % rank for a in axes)


def _only_user(graph: gs.Graph, node: gs.Node) -> gs.Node | None:
    y = node.outputs[0]
    return y.outputs[0] if len(y.outputs) == 1 and not is_output(graph, y) else None


def _shared(graph: gs.Graph, steps: list[gs.Node], readers: list[list[gs.Node]]) -> str | None:
    """Why the intermediate results are not the pattern's alone: one read elsewhere, or a graph output
    (`readers`: the nodes that may read each step's output, one list per step but the last)."""
    for step, allowed in zip(steps, readers):
        y = step.outputs[0]
        other = [n for n in y.outputs if not any(n is a for a in allowed)]
        if other or is_output(graph, y):
            where = f"node '{other[0].name}' ({other[0].op})" if other else "the graph's outputs"
            return f"'{y.name}' (of node '{step.name}', {step.op}) is also read by {where}"
    return None


def _broadcasts_to(dims, normalized) -> bool:
    """Whether a constant of `dims` broadcasts to the normalized dims without adding dims before them."""
    dims = list(dims)
    while dims and dims[0] == 1 and len(dims) > len(normalized):
        dims.pop(0)
    return len(dims) <= len(normalized) and all(d in (1, n) for d, n in zip(reversed(dims), reversed(normalized)))


REWRITE = Rewrite("fuse_layer_norm", matches, check, rewrite, description=__doc__)
