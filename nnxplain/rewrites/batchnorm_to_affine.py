"""A BatchNormalization that could not be folded (fold_batchnorm says why) becomes a per-channel Mul
by its scale and an Add of its shift. It must apply: no later stage handles BatchNormalization."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from . import Reason, Rewrite
from .fold_batchnorm import affine


def matches(graph: gs.Graph, node: gs.Node) -> bool:
    return node.op == "BatchNormalization"


def check(graph: gs.Graph, bn: gs.Node):
    found = affine(bn)
    if isinstance(found, Reason):
        return found
    if len(bn.inputs[0].shape or []) < 2:
        return Reason("the input's rank is unknown")
    return found


def node_names(output: str) -> tuple[str, str]:
    """The names of the Mul and the Add that a BatchNormalization with this output becomes."""
    return output + "_scale", output + "_shift"


def rewrite(graph: gs.Graph, bn: gs.Node, found):
    scale, shift = found
    shape = [-1] + [1] * (len(bn.inputs[0].shape) - 2)
    base = bn.outputs[0].name
    scaled = gs.Variable(base + "_scaled", dtype=np.float32)
    mul_name, add_name = node_names(base)
    mul = gs.Node("Mul", mul_name, inputs=[bn.inputs[0], gs.Constant(base + "_scale", scale.reshape(shape).astype(np.float32))],
                  outputs=[scaled])
    add = gs.Node("Add", add_name, inputs=[scaled, gs.Constant(base + "_shift", shift.reshape(shape).astype(np.float32))],
                  outputs=[bn.outputs[0]])
    bn.outputs.clear()
    graph.nodes.extend([mul, add])


REWRITE = Rewrite("batchnorm_to_affine", matches, check, rewrite, must_apply=True, description=__doc__)
