"""Explanations are of the pre-softmax scores: a Softmax or LogSoftmax that produces a graph output
is removed (the output keeps its name)."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from . import Rewrite, is_output, replace, why_not_replace


def matches(graph: gs.Graph, node: gs.Node) -> bool:
    return node.op in ("Softmax", "LogSoftmax") and is_output(graph, node.outputs[0])


def check(graph: gs.Graph, node: gs.Node):
    return why_not_replace(graph, node.outputs[0], node.inputs[0]) or True


def rewrite(graph: gs.Graph, node: gs.Node, _):
    replace(graph, node.outputs[0], node.inputs[0])
    node.outputs.clear()


REWRITE = Rewrite("strip_output_softmax", matches, check, rewrite, description=__doc__)
