"""Model surgery before matching: rewrite the model into a smaller set of ops without changing what
it computes (outputs equal to float32 precision).

Each rewrite finds its pattern, checks the conditions under which replacing it is exact, and
replaces it; where a condition fails the node is left alone (or, for BatchNormalization, becomes a
per-channel affine), so a later stage never sees a half-rewritten graph.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .errors import NnxplainError, UnsupportedError
from .load import IR_VERSION, first_line, infer_shapes
from .ops import having, with_attribute

gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR  # graphsurgeon warns about optional extras


def canonicalize(proto: onnx.ModelProto, keep_softmax: bool = False) -> onnx.ModelProto:
    graph = gs.import_onnx(proto)
    _fold_constants(graph)
    drop_passthrough(graph)
    fold_batchnorm(graph)
    matmul_add_to_gemm(graph)
    if not keep_softmax:
        strip_output_softmax(graph)
    explicit_pads(graph)
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    out.ir_version = IR_VERSION
    del out.opset_import[:]
    out.opset_import.extend(proto.opset_import)
    try:
        return infer_shapes(out, data_prop=True)
    except Exception as exc:  # onnx's ValidationError / InferenceError: constants folded, shapes disagree
        raise NnxplainError(f"the model's shapes do not agree once its constants are folded: "
                            f"{first_line(exc)}") from None


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


def _set(tensors, new: list):
    """Replace a node's input or output list (graphsurgeon's synchronized lists take no slice assignment)."""
    new = list(new)
    tensors.clear()
    tensors.extend(new)


def _consumers(t: gs.Tensor) -> list[gs.Node]:
    return list(t.outputs)


def _replace(graph: gs.Graph, old: gs.Tensor, new: gs.Tensor):
    """Make every consumer of `old` read `new`; a graph output keeps its name (new takes it over)."""
    for node in _consumers(old):
        _set(node.inputs, [new if t is old else t for t in node.inputs])
    if any(t is old for t in graph.outputs):
        if new in graph.inputs or any(t is new for t in graph.outputs):
            raise _Keep()
        name = old.name
        old.name = name + "__replaced"
        new.name = name
        graph.outputs = [new if t is old else t for t in graph.outputs]


class _Keep(Exception):
    """A rewrite that would rename a graph input or merge two outputs: leave the node as it is."""


def drop_passthrough(graph: gs.Graph):
    """Identity and Dropout compute nothing at inference: consumers read their input directly."""
    for node in [n for n in graph.nodes if n.op in having(category="routing", pointwise=True)]:
        if len(node.outputs) > 1 and node.outputs[1].outputs:
            continue  # the dropout mask is used
        x, y = node.inputs[0], node.outputs[0]
        try:
            _replace(graph, y, x)
        except _Keep:
            continue
        node.outputs.clear()


def strip_output_softmax(graph: gs.Graph):
    """Explanations are of the pre-softmax scores: a Softmax/LogSoftmax producing an output goes."""
    for out in list(graph.outputs):
        node = out.inputs[0] if out.inputs else None
        if node is None or node.op not in ("Softmax", "LogSoftmax"):
            continue
        try:
            _replace(graph, out, node.inputs[0])
        except _Keep:
            continue
        node.outputs.clear()


def _bn_affine(bn: gs.Node) -> tuple[np.ndarray, np.ndarray]:
    params = bn.inputs[1:5]
    if not all(isinstance(t, gs.Constant) for t in params):
        raise UnsupportedError(f"node '{bn.name}' (BatchNormalization): its scale, bias, mean and variance must be constants")
    if bn.attrs.get("training_mode", 0):
        raise UnsupportedError(f"node '{bn.name}' (BatchNormalization): training_mode=1 is not an inference model")
    gamma, beta, mean, var = (t.values.astype(np.float64) for t in params)
    scale = gamma / np.sqrt(var + bn.attrs.get("epsilon", 1e-5))
    return scale, beta - mean * scale


def _only_user(t: gs.Tensor, node: gs.Node) -> bool:
    return len(t.outputs) == 1 and t.outputs[0] is node


def fold_batchnorm(graph: gs.Graph):
    """BatchNormalization after a Conv/Gemm/MatMul whose weights are constants used by that node alone
    is folded into those weights; any other BatchNormalization becomes a per-channel Mul + Add."""
    for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        scale, shift = _bn_affine(bn)
        x = bn.inputs[0]
        producer = x.inputs[0] if len(x.inputs) == 1 else None
        folded = producer is not None and _fold_into(graph, producer, x, bn, scale, shift)
        if not folded:
            _to_affine(graph, bn, scale, shift)


def _fold_into(graph, producer, x, bn, scale, shift) -> bool:
    if len(x.outputs) != 1 or any(t is x for t in graph.outputs) or producer.op not in having(category="linear"):
        return False
    w = producer.inputs[1]
    if not isinstance(w, gs.Constant) or not _only_user(w, producer):
        return False
    b = producer.inputs[2] if len(producer.inputs) > 2 and producer.inputs[2].name else None
    if b is not None and not (isinstance(b, gs.Constant) and _only_user(b, producer)):
        return False
    weight = w.values.astype(np.float64)
    channels = scale.shape[0]
    if producer.op == "Conv":
        new_w = weight * scale.reshape([-1] + [1] * (weight.ndim - 1))
        bias = b.values.astype(np.float64) if b is not None else 0.0
    else:  # Gemm or MatMul: output features are the columns of op(B)
        if producer.op == "MatMul" and (weight.ndim != 2 or len(x.shape or []) != 2):
            return False
        if producer.op == "Gemm" and producer.attrs.get("transB", 0):
            new_w = weight * scale[:, None]
        else:
            new_w = weight * scale[None, :]
        if b is None:
            bias = 0.0
        else:
            c = b.values.astype(np.float64)
            if c.size not in (1, channels) or (c.ndim == 2 and c.shape[0] != 1):
                return False
            bias = c.reshape(-1) * producer.attrs.get("beta", 1.0)
        if producer.op == "MatMul":
            producer.op = "Gemm"
            producer.attrs = {}
        producer.attrs["beta"] = 1.0
    new_b = np.broadcast_to(bias, (channels,)) * scale + shift
    base = bn.outputs[0].name  # tensor names are unique; node names may be empty
    _set(producer.inputs, [producer.inputs[0], gs.Constant(base + "_folded_weight", new_w.astype(np.float32)),
                           gs.Constant(base + "_folded_bias", new_b.astype(np.float32))])
    _set(producer.outputs, [bn.outputs[0]])
    bn.outputs.clear()
    return True


def _to_affine(graph, bn, scale, shift):
    rank = len(bn.inputs[0].shape or [])
    if rank < 2:
        raise UnsupportedError(f"node '{bn.name}' (BatchNormalization): the input's rank is unknown")
    shape = [-1] + [1] * (rank - 2)
    base = bn.outputs[0].name
    scaled = gs.Variable(base + "_scaled", dtype=np.float32)
    mul = gs.Node("Mul", base + "_scale", inputs=[bn.inputs[0], gs.Constant(base + "_scale", scale.reshape(shape).astype(np.float32))],
                  outputs=[scaled])
    add = gs.Node("Add", base + "_shift", inputs=[scaled, gs.Constant(base + "_shift", shift.reshape(shape).astype(np.float32))],
                  outputs=[bn.outputs[0]])
    bn.outputs.clear()
    graph.nodes.extend([mul, add])


def matmul_add_to_gemm(graph: gs.Graph):
    """MatMul(x, W) + b, with x a matrix and W, b constants, is one linear layer: Gemm(x, W, b)."""
    for mm in [n for n in graph.nodes if n.op == "MatMul"]:
        x, w = mm.inputs
        y = mm.outputs[0]
        if not isinstance(w, gs.Constant) or w.values.ndim != 2 or len(x.shape or []) != 2:
            continue
        if len(y.outputs) != 1 or y.outputs[0].op != "Add" or any(t is y for t in graph.outputs):
            continue
        add = y.outputs[0]
        b = add.inputs[1] if add.inputs[0] is y else add.inputs[0]
        n_out = w.values.shape[1]
        if not isinstance(b, gs.Constant) or b.values.size != n_out or b.values.ndim > 2:
            continue
        mm.op = "Gemm"
        _set(mm.inputs, [x, w, gs.Constant(add.outputs[0].name + "_bias", b.values.reshape(n_out).astype(np.float32))])
        _set(mm.outputs, [add.outputs[0]])
        add.outputs.clear()


def explicit_pads(graph: gs.Graph):
    """auto_pad SAME_UPPER / SAME_LOWER / VALID become explicit pads (needs static spatial dims)."""
    for node in graph.nodes:
        mode = node.attrs.get("auto_pad", "NOTSET")
        if node.op not in with_attribute("auto_pad") or mode == "NOTSET":
            continue
        kernel = node.attrs.get("kernel_shape") or list(node.inputs[1].shape[2:])
        n = len(kernel)
        if mode == "VALID":
            pads = [0] * 2 * n
        else:
            dims = (node.inputs[0].shape or [])[2:]
            if len(dims) != n or not all(isinstance(d, int) for d in dims):
                raise UnsupportedError(f"node '{node.name}' ({node.op}): auto_pad {mode} needs static spatial dims")
            strides = node.attrs.get("strides", [1] * n)
            dilations = node.attrs.get("dilations", [1] * n)
            begin, end = [], []
            for size, k, s, d in zip(dims, kernel, strides, dilations):
                total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
                small, large = total // 2, total - total // 2
                begin.append(small if mode == "SAME_UPPER" else large)
                end.append(large if mode == "SAME_UPPER" else small)
            pads = begin + end
        node.attrs["auto_pad"] = "NOTSET"
        node.attrs["pads"] = pads
