"""The backward driver: walk the graph in reverse, ask each node's rule for its inputs' relevance,
sum relevance where the forward graph fanned out."""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

from .emitter import Emitter
from .errors import UnsupportedError

# Ops whose outputs carry no gradient (shapes, indices, comparisons), whatever their inputs.
NOT_DIFFERENTIABLE = {"Shape", "Size", "ArgMax", "ArgMin", "Equal", "Greater", "GreaterOrEqual", "Less",
                      "LessOrEqual", "Not", "And", "Or", "Xor", "NonZero", "ConstantOfShape", "IsNaN", "IsInf",
                      "RandomNormalLike", "RandomUniformLike", "EyeLike"}
FLOAT_TYPES = {"float32", "float16", "float64", "bfloat16"}


def depends_on(graph: gs.Graph, sources: list[gs.Tensor], nodes: list[gs.Node] | None = None) -> set[str]:
    """Names of the float tensors that depend differentiably on any of `sources` (through `nodes`, in
    topological order; default: all of the graph's)."""
    live = {t.name for t in sources}
    for node in graph.nodes if nodes is None else nodes:
        if node.op in NOT_DIFFERENTIABLE or not any(t.name in live for t in node.inputs):
            continue
        live.update(t.name for t in node.outputs if t.dtype is None or _is_float(t.dtype))
    return live


def _is_float(dtype) -> bool:
    try:
        return np.dtype(dtype).name in FLOAT_TYPES
    except TypeError:
        return True


def propagate(e: Emitter, seeds: dict[str, gs.Tensor], wrt: list[gs.Tensor],
              rule_for: Callable[[gs.Node], Callable], nodes: list[gs.Node] | None = None) -> dict[str, gs.Tensor | None]:
    """Relevance (or gradient) at each tensor in `wrt`, starting from `seeds` (tensor name -> seed).

    `rule_for(node)` returns the callable `(e, node, *dys) -> [dx per input]` that maps the
    relevance of the node's outputs to its inputs. `nodes`: the forward pass to walk back through,
    topologically sorted (default: the whole graph). Passing just that pass keeps the walk's cost
    independent of what was emitted before (earlier methods, earlier sampling blocks).
    """
    nodes = list(e.graph.nodes) if nodes is None else nodes
    live = depends_on(e.graph, wrt, nodes)
    targets = {t.name for t in wrt}  # relevance stops there (a wrt tensor may be computed, as a sampled input is)
    pending: dict[str, list[gs.Tensor]] = {name: [seed] for name, seed in seeds.items()}
    for node in reversed(nodes):
        if not any(t.name in pending and t.name not in targets for t in node.outputs):
            continue
        dys = [e.add_all(pending.pop(t.name)) if t.name in pending and t.name not in targets else None
               for t in node.outputs]
        if not any(t.name in live for t in node.inputs):
            continue
        rule = rule_for(node)
        try:
            dxs = rule(e, node, *dys)
        except (ValueError, NotImplementedError, KeyError) as exc:
            raise UnsupportedError(f"node '{node.name}' ({node.op}): {exc}") from None
        for x, dx in zip(node.inputs, dxs):
            if dx is not None and x.name in live:
                pending.setdefault(x.name, []).append(dx)
    return {t.name: e.add_all(pending[t.name]) if t.name in pending else None for t in wrt}
