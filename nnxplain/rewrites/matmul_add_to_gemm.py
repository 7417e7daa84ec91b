"""MatMul(x, W) + b, with x a matrix and W, b constants, is one linear layer: Gemm(x, W, b)."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from . import Reason, Rewrite, is_output, set_tensors


def matches(graph: gs.Graph, node: gs.Node) -> bool:
    """A MatMul whose output only an Add reads."""
    y = node.outputs[0] if node.op == "MatMul" else None
    return y is not None and len(y.outputs) == 1 and y.outputs[0].op == "Add" and not is_output(graph, y)


def check(graph: gs.Graph, mm: gs.Node):
    x, w = mm.inputs
    add = mm.outputs[0].outputs[0]
    if not isinstance(w, gs.Constant) or w.values.ndim != 2:
        return Reason("its weight is not a constant matrix")
    if len(x.shape or []) != 2:
        return Reason(f"its input '{x.name}' is not a matrix (rank {len(x.shape) if x.shape else 'unknown'})")
    b = add.inputs[1] if add.inputs[0] is mm.outputs[0] else add.inputs[0]
    n_out = w.values.shape[1]
    if not isinstance(b, gs.Constant) or b.values.size != n_out or b.values.ndim > 2:
        return Reason(f"what node '{add.name}' (Add) adds is not a constant of one value per output feature")
    return b.values.reshape(n_out).astype(np.float32)


def rewrite(graph: gs.Graph, mm: gs.Node, bias: np.ndarray):
    add = mm.outputs[0].outputs[0]
    mm.op = "Gemm"
    set_tensors(mm.inputs, [mm.inputs[0], mm.inputs[1], gs.Constant(add.outputs[0].name + "_bias", bias)])
    set_tensors(mm.outputs, [add.outputs[0]])
    add.outputs.clear()


REWRITE = Rewrite("matmul_add_to_gemm", matches, check, rewrite, description=__doc__)
