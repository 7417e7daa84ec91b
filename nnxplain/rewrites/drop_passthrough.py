"""Identity and Dropout compute nothing at inference: their consumers read their input directly."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from ..ops import having
from . import Reason, Rewrite, replace, why_not_replace


def matches(graph: gs.Graph, node: gs.Node) -> bool:
    return node.op in having(category="routing", pointwise=True)  # Identity, Dropout


def check(graph: gs.Graph, node: gs.Node):
    if len(node.outputs) > 1 and node.outputs[1].outputs:
        return Reason(f"its mask '{node.outputs[1].name}' is read by node '{node.outputs[1].outputs[0].name}'")
    return why_not_replace(graph, node.outputs[0], node.inputs[0]) or True


def rewrite(graph: gs.Graph, node: gs.Node, _):
    replace(graph, node.outputs[0], node.inputs[0])
    node.outputs.clear()


REWRITE = Rewrite("drop_passthrough", matches, check, rewrite, description=__doc__)
