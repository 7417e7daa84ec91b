"""Model surgery before matching: rewrite the model into a smaller set of ops without changing what
it computes (outputs equal to float32 precision).

After constant folding, the named rewrites of nnxplain/rewrites/ run in the order of REWRITES. Each
finds its pattern, checks the conditions under which replacing it is exact, and replaces it; where a
condition fails the node is left alone and the reason is reported (or, for BatchNormalization, it
becomes a per-channel affine), so a later stage never sees a half-rewritten graph.
"""
from __future__ import annotations

import gc
import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .errors import NnxplainError
from .load import IR_VERSION, first_line, infer_shapes, load
from .rewrites import Skipped, apply
from .rewrites import (batchnorm_to_affine, drop_passthrough, explicit_pads, fold_batchnorm, fuse_layer_norm,
                       matmul_add_to_gemm, strip_output_softmax)

gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR  # graphsurgeon warns about optional extras


# In this order: BatchNormalization folds into a MatMul before the MatMul and an Add become a Gemm.
REWRITES = [module.REWRITE for module in (drop_passthrough, fuse_layer_norm, fold_batchnorm, batchnorm_to_affine,
                                          matmul_add_to_gemm, strip_output_softmax, explicit_pads)]


def canonicalize(proto: onnx.ModelProto, keep_softmax: bool = False,
                 skipped: list[Skipped] | None = None) -> onnx.ModelProto:
    """The canonical model. `skipped`: a list to which each rewrite that was checked at a node and did
    not apply adds why (nnxplain support prints them)."""
    graph = _folded(gs.import_onnx(proto), proto.opset_import)
    for rewrite in REWRITES:
        if keep_softmax and rewrite is strip_output_softmax.REWRITE:
            continue
        apply(rewrite, graph, skipped)
    graph.cleanup().toposort()
    _name_unnamed_nodes(graph)
    out = gs.export_onnx(graph)
    out.ir_version = IR_VERSION
    del out.opset_import[:]
    out.opset_import.extend(proto.opset_import)
    try:
        return infer_shapes(out, data_prop=True)
    except Exception as exc:  # onnx's ValidationError / InferenceError: constants folded, shapes disagree
        raise NnxplainError(f"the model's shapes do not agree once its constants are folded: "
                            f"{first_line(exc)}") from None


def _name_unnamed_nodes(graph: gs.Graph):
    """Give every unnamed node a name of its own (its op and position): copies of the forward pass
    (sampling blocks, DeepLIFT's reference pass) are named after the nodes they copy, and ONNX
    Runtime refuses two nodes of one name."""
    taken = {node.name for node in graph.nodes if node.name}
    for i, node in enumerate(graph.nodes):
        if not node.name:
            name = f"{node.op}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def canonical_graph(model, keep_softmax: bool = False, skipped: list | None = None) -> gs.Graph:
    """The model (path or ModelProto) loaded, checked and canonicalized, as the graph that methods'
    passes and pattern statistics are added to. `skipped`: as canonicalize's."""
    graph = gs.import_onnx(canonicalize(load(model), keep_softmax=keep_softmax, skipped=skipped))
    gc.collect()  # the loaded model and canonicalization's graph: a copy of the weights each (see compiler.without_gc)
    graph.toposort()
    return graph


def unfolded_batchnorms(message: str, skipped: list[Skipped]) -> str:
    """An error about a node that an unfolded BatchNormalization became (its Mul or Add), with why the
    BatchNormalization was not folded: otherwise the user sees a node the model does not have."""
    for s in skipped:
        if s.rewrite == "fold_batchnorm" and s.outputs and \
                any(f"'{name}'" in message for name in batchnorm_to_affine.node_names(s.outputs[0])):
            return f"{message} (node '{s.node}' (BatchNormalization) became that Mul and Add, not folded: {s.reason})"
    return message


# Constant folding evaluates the constant parts of the graph. A model's own weights are constants
# already; what folding builds beyond them (a transposed or reshaped weight, a shape) is about as
# large. A tensor far larger than all the model's weights together, which a 200-byte model can ask
# for (ConstantOfShape of [32768, 32768]), is left to be computed at run time instead.
FOLD_SLACK = 1 << 26  # bytes


def _fold_constants(graph: gs.Graph):
    from .runtime import quiet_sessions
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    weights = sum(t.values.nbytes for t in graph.tensors().values() if isinstance(t, gs.Constant))
    limit = FOLD_SLACK + 2 * weights
    if _largest_foldable(graph) > limit:
        return  # folding would materialize it (even as an intermediate): fold nothing
    with quiet_sessions():  # graphsurgeon folds with ONNX Runtime sessions of its own
        graph.fold_constants(error_ok=True, size_threshold=limit).cleanup()


def _folded(graph: gs.Graph, opsets, passes: int = 8) -> gs.Graph:
    """The graph with its constant parts folded, shape computations included. Folding a Shape needs
    its input's dims known, and the dims after a Pad or Reshape whose sizes were computed from shapes
    (torchvision's Swin pads to a multiple of its window that way) are known only once those sizes are
    folded and shapes inferred again: so fold and infer again while that removes Shape nodes."""
    _fold_constants(graph)
    for _ in range(passes):
        shapes = sum(node.op == "Shape" for node in graph.nodes)
        if not shapes:
            break
        model = gs.export_onnx(graph.cleanup())
        del model.graph.value_info[:]  # the dims inferred before folding: inferred again from the folded sizes
        del model.opset_import[:]
        model.opset_import.extend(opsets)
        model.ir_version = IR_VERSION
        try:
            graph = gs.import_onnx(infer_shapes(model, data_prop=True))
        except Exception:  # the shapes disagree: the final inference below says so
            break
        _fold_constants(graph)
        if sum(node.op == "Shape" for node in graph.nodes) == shapes:
            break
    return graph


def _largest_foldable(graph: gs.Graph) -> int:
    """The size in bytes of the largest tensor that folding would compute, as far as the inferred
    shapes tell (a tensor of unknown shape counts as 0)."""
    constant = {t.name for t in graph.tensors().values() if isinstance(t, gs.Constant)} | {""}
    largest = 0
    for node in graph.nodes:
        if node.op.startswith("Random") or not all(t.name in constant for t in node.inputs) or \
                any(isinstance(v, gs.Graph) for v in node.attrs.values()):
            continue
        for t in node.outputs:
            constant.add(t.name)
            if t.shape is not None and t.dtype is not None and all(isinstance(d, int) and d >= 0 for d in t.shape):
                largest = max(largest, int(np.prod(t.shape, dtype=object)) * 8)  # 8: the largest element size
    return largest
