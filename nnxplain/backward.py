"""The backward driver: walk the graph in reverse, ask each node's rule for its inputs' relevance,
sum relevance where the forward graph fanned out."""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .emitter import Emitter
from .errors import UnsupportedError
from .ops import having

# Ops whose outputs carry no gradient (shapes, indices, comparisons), whatever their inputs.
NOT_DIFFERENTIABLE = having(category="not_differentiable")
FLOAT_TYPES = {"float32", "float16", "float64", "bfloat16"}


def depends_on(graph: gs.Graph, sources: list[gs.Tensor], nodes: list[gs.Node] | None = None) -> set[str]:
    """Names of the float tensors that depend differentiably on any of `sources` (through `nodes`, in
    topological order; default: all of the graph's). A node with a subgraph, If / Loop / Scan, depends
    on what its subgraphs read from the outer graph too."""
    live = {t.name for t in sources}
    for node in graph.nodes if nodes is None else nodes:
        if node.op in NOT_DIFFERENTIABLE or not any(t.name in live for t in reads(node)):
            continue
        live.update(t.name for t in node.outputs if t.dtype is None or _is_float(t.dtype))
    return live


def reads(node: gs.Node) -> list[gs.Tensor]:
    """The tensors a node reads: its inputs and, for If / Loop / Scan, the outer-graph tensors its
    subgraphs capture (they are no inputs of the node)."""
    subgraphs = [v for v in node.attrs.values() if isinstance(v, gs.Graph)]
    return list(node.inputs) + [t for g in subgraphs for t in captured(g)] if subgraphs else list(node.inputs)


def captured(graph: gs.Graph) -> list[gs.Tensor]:
    """The outer-scope tensors a subgraph (and the subgraphs nested in it) reads."""
    local = {t.name for t in graph.inputs} | {t.name for n in graph.nodes for t in n.outputs}
    out = []
    for node in graph.nodes:
        for t in reads(node):
            if t.name and t.name not in local and not isinstance(t, gs.Constant):
                out.append(t)
    return out


def reaches(graph: gs.Graph, sources: list[gs.Tensor], y: gs.Tensor) -> bool:
    """Whether y depends on any of `sources` (the graph topologically sorted)."""
    reached = {t.name for t in sources}
    for node in graph.nodes:
        if any(t.name in reached for t in reads(node)):
            reached.update(t.name for t in node.outputs)
    return y.name in reached


def check_subgraphs(graph: gs.Graph, live: set[str], y: gs.Tensor):
    """An op with a subgraph (If, Loop, Scan) whose subgraph reads the explained input, on the way to
    the explained output y, has no backward pass here: refuse it by name (an If whose condition is a
    constant was folded away when the model was canonicalized)."""
    for node in graph.nodes:
        subgraphs = [v for v in node.attrs.values() if isinstance(v, gs.Graph)]
        inside = [t.name for g in subgraphs for t in captured(g) if t.name in live]
        if inside and reaches(graph, node.outputs, y):
            raise UnsupportedError(f"node '{node.name}' ({node.op}) reads '{inside[0]}', which depends on the explained "
                                   f"input, inside its subgraph: ops with subgraphs (If, Loop, Scan) have no backward "
                                   f"pass (an If whose condition is a constant is folded)")


def _is_float(dtype) -> bool:
    name = dtype_name(dtype)
    return name is None or name in FLOAT_TYPES


def dtype_name(dtype) -> str | None:
    """A tensor type's name (float32, bfloat16, int8, ...): numpy's, or ONNX's for the types numpy
    lacks (graphsurgeon gives those as TensorProto numbers)."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        try:
            return onnx.TensorProto.DataType.Name(int(dtype)).lower()
        except (TypeError, ValueError):
            return None


def propagate(e: Emitter, seeds: dict[str, gs.Tensor], wrt: list[gs.Tensor],
              rule_for: Callable[[gs.Node], Callable], nodes: list[gs.Node] | None = None) -> dict[str, gs.Tensor | None]:
    """Relevance (or gradient) at each tensor in `wrt`, starting from `seeds` (tensor name -> seed).

    `rule_for(node)` returns the rule's name and the callable `(e, node, *dys) -> [dx per input]`
    that maps the relevance of the node's outputs to its inputs; what it emits is named
    `<scope>/<node>/<rule>/...` (the node's name, or its first output's where it has none).
    `nodes`: the forward pass to walk back through, topologically sorted (default: the whole graph). Passing just that pass keeps the walk's cost
    independent of what was emitted before (earlier methods, earlier sampling blocks).
    """
    nodes = list(e.graph.nodes) if nodes is None else nodes
    live = depends_on(e.graph, wrt, nodes)
    targets = {t.name for t in wrt}  # relevance stops there (a wrt tensor may be computed, as a sampled input is)
    pending: dict[str, list[gs.Tensor]] = {name: [seed] for name, seed in seeds.items()}
    for node in reversed(nodes):
        if not any(t.name in pending and t.name not in targets for t in node.outputs):
            continue
        with e.scope(node.name or node.outputs[0].name):
            dys = [e.add_all(pending.pop(t.name)) if t.name in pending and t.name not in targets else None
                   for t in node.outputs]
            if not any(t.name in live for t in node.inputs):
                continue
            name, rule = rule_for(node)
            try:
                with e.scope(name):
                    dxs = rule(e, node, *dys)
            except (ValueError, NotImplementedError, KeyError) as exc:
                raise UnsupportedError(f"node '{node.name}' ({node.op}): {exc}") from None
        for x, dx in zip(node.inputs, dxs):
            if dx is not None and x.name in live:
                pending.setdefault(x.name, []).append(dx)
    return {t.name: e.add_all(pending[t.name]) if t.name in pending else None for t in wrt}
