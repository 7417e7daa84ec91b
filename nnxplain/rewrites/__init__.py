"""Canonicalization rewrites, one per module, each in the onnxscript rewriter's shape:

- a pattern: the nodes the rewrite looks at (`matches(graph, node)`; a node that does not match is
  simply not its business, and nothing is reported);
- a check: whether replacing the match is exact here; it returns what the rewrite needs, or a
  `Reason` (a string) saying why the node stays as it is;
- a rewrite: replaces the match, given what the check returned.

`apply` runs one rewrite over a graph and reports each node it checked and left (`Skipped`), which
`nnxplain support` prints: why a BatchNormalization stayed unfolded, for instance. A rewrite that
must apply (the later stages cannot handle the node otherwise) turns its reason into an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import onnx_graphsurgeon as gs

from ..errors import UnsupportedError


class Reason(str):
    """Why a check does not let its rewrite apply (a check returns this, or what the rewrite needs)."""


@dataclass(frozen=True)
class Rewrite:
    name: str
    matches: Callable[[gs.Graph, gs.Node], bool]        # the pattern
    check: Callable[[gs.Graph, gs.Node], Any]            # what the rewrite needs, or a Reason
    rewrite: Callable[[gs.Graph, gs.Node, Any], None]
    must_apply: bool = False                             # a Reason is an error, not a skip
    description: str = ""


@dataclass(frozen=True)
class Skipped:
    rewrite: str
    node: str
    op: str
    reason: str
    outputs: tuple[str, ...] = ()  # the node's output tensors (what a later rewrite makes of the node is named after them)

    def __str__(self):
        return f"node '{self.node}' ({self.op}): {self.rewrite} does not apply: {self.reason}"


def apply(rule: Rewrite, graph: gs.Graph, skipped: list | None = None):
    """Run `rule` on every node its pattern matches, in graph order; each node is checked when its turn
    comes, so it sees what the rewrites of the nodes before it changed."""
    for node in [n for n in graph.nodes if rule.matches(graph, n)]:
        if not node.outputs:  # removed by an earlier match (its outputs were taken over)
            continue
        match = rule.check(graph, node)
        if isinstance(match, Reason):
            if rule.must_apply:
                raise UnsupportedError(f"node '{node.name}' ({node.op}): {match}")
            if skipped is not None:
                skipped.append(Skipped(rule.name, node.name, node.op, str(match), tuple(t.name for t in node.outputs)))
            continue
        rule.rewrite(graph, node, match)


# --- helpers the rewrites share ---------------------------------------------------------------
def set_tensors(tensors, new: list):
    """Replace a node's input or output list (graphsurgeon's synchronized lists take no slice assignment)."""
    new = list(new)
    tensors.clear()
    tensors.extend(new)


def producer(t: gs.Tensor) -> gs.Node | None:
    return t.inputs[0] if len(t.inputs) == 1 else None


def only_user(t: gs.Tensor, node: gs.Node) -> bool:
    return len(t.outputs) == 1 and t.outputs[0] is node


def is_output(graph: gs.Graph, t: gs.Tensor) -> bool:
    return any(o is t for o in graph.outputs)


def why_not_replace(graph: gs.Graph, old: gs.Tensor, new: gs.Tensor) -> Reason | None:
    """Why `replace(graph, old, new)` would change the graph's interface, or None: a graph output
    read straight from a graph input, or two outputs merged into one, cannot keep their names."""
    if not is_output(graph, old):
        return None
    if new in graph.inputs:
        return Reason(f"it connects graph input '{new.name}' straight to graph output '{old.name}'")
    if is_output(graph, new):
        return Reason(f"its input '{new.name}' and its output '{old.name}' are both graph outputs")
    return None


def replace(graph: gs.Graph, old: gs.Tensor, new: gs.Tensor):
    """Make every consumer of `old` read `new`; a graph output keeps its name (new takes it over).
    Checked first with why_not_replace."""
    for node in list(old.outputs):
        set_tensors(node.inputs, [new if t is old else t for t in node.inputs])
    if is_output(graph, old):
        name = old.name
        old.name = name + "__replaced"
        new.name = name
        graph.outputs = [new if t is old else t for t in graph.outputs]
