"""Explanations are of the pre-softmax scores: a Softmax or LogSoftmax that produces a graph output
is removed (the output keeps its name).

So is one wrapped as Flatten -> Softmax -> Reshape, which is how the opset converter writes an
opset < 13 Softmax (over all axes from `axis` on) of an input of rank > 2: the three nodes go and
the output is the Flatten's input, exactly when the Reshape restores the shape the Flatten
flattened (its shape is Shape of that input, or that input's static shape), so that the logits
keep their order and shape."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from . import Reason, Rewrite, is_output, only_user, producer, replace, why_not_replace

SOFTMAX = ("Softmax", "LogSoftmax")


def wrapping_reshape(graph: gs.Graph, node: gs.Node) -> gs.Node | None:
    """The Reshape that reads the node's output alone and produces a graph output, if there is one."""
    users = node.outputs[0].outputs
    if len(users) == 1 and users[0].op == "Reshape" and users[0].inputs[0] is node.outputs[0] \
            and is_output(graph, users[0].outputs[0]):
        return users[0]
    return None


def matches(graph: gs.Graph, node: gs.Node) -> bool:
    return node.op in SOFTMAX and (is_output(graph, node.outputs[0]) or wrapping_reshape(graph, node) is not None)


def check(graph: gs.Graph, node: gs.Node):
    """(the output to replace, the tensor that replaces it), or why not."""
    if is_output(graph, node.outputs[0]):
        return why_not_replace(graph, node.outputs[0], node.inputs[0]) or (node.outputs[0], node.inputs[0])
    reshape = wrapping_reshape(graph, node)
    flatten = producer(node.inputs[0])
    if flatten is None or flatten.op != "Flatten" or not only_user(node.inputs[0], node):
        return Reason(f"the Reshape after it ('{reshape.name}') gives the output, and its input is no Flatten "
                      f"that it alone reads")
    logits = flatten.inputs[0]
    if not restores(reshape.inputs[1], logits):
        return Reason(f"the Reshape after it ('{reshape.name}') does not restore the shape of '{logits.name}' "
                      f"that the Flatten before it ('{flatten.name}') flattened")
    return why_not_replace(graph, reshape.outputs[0], logits) or (reshape.outputs[0], logits)


def restores(target: gs.Tensor, t: gs.Tensor) -> bool:
    """Whether Reshape to `target` gives t's shape whatever t is: target is Shape(t), or the constant
    of t's static shape."""
    source = producer(target)
    if source is not None and source.op == "Shape" and source.inputs[0] is t \
            and source.attrs.get("start", 0) == 0 and source.attrs.get("end") is None:
        return True
    dims = t.shape
    static = dims is not None and all(isinstance(d, (int, np.integer)) and d >= 0 for d in dims)
    return static and isinstance(target, gs.Constant) and list(target.values.reshape(-1)) == list(dims) \
        and 0 not in dims  # a 0 in the target copies the input's dim rather than meaning 0


def rewrite(graph: gs.Graph, node: gs.Node, match):
    old, new = match
    consumer = old.inputs[0]
    replace(graph, old, new)
    consumer.outputs.clear()
    node.outputs.clear()


REWRITE = Rewrite("strip_output_softmax", matches, check, rewrite, description=__doc__)
