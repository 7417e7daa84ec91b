"""A BatchNormalization after a Conv, Gemm or MatMul whose weights are constants that node alone
uses is folded into those weights: the layer computes the normalized output itself. A
BatchNormalization that stays (the reason is reported) becomes a per-channel affine
(batchnorm_to_affine), which LRP treats as a Mul and an Add, not as part of the layer."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..layer import NO_ROWS, LinearLayer
from ..ops import having
from . import Reason, Rewrite, is_output, only_user, producer, set_tensors

LAYERS = having(category="linear") - set(NO_ROWS)  # Conv, Gemm, MatMul: the layers whose weight rows are known


def affine(bn: gs.Node) -> tuple[np.ndarray, np.ndarray] | Reason:
    """(scale, shift) of the normalization, float64, or why it is not a fixed per-channel affine."""
    params = bn.inputs[1:5]
    if not all(isinstance(t, gs.Constant) for t in params):
        return Reason("its scale, bias, mean and variance must be constants")
    if bn.attrs.get("training_mode", 0):
        return Reason("training_mode=1 is not an inference model")
    gamma, beta, mean, var = (t.values.astype(np.float64) for t in params)
    scale = gamma / np.sqrt(var + bn.attrs.get("epsilon", 1e-5))
    return scale, beta - mean * scale


@dataclass
class Fold:
    layer: gs.Node
    weight: np.ndarray      # float64, scaled per output channel
    bias: np.ndarray        # float64 [channels]


def matches(graph: gs.Graph, node: gs.Node) -> bool:
    return node.op == "BatchNormalization"


def check(graph: gs.Graph, bn: gs.Node) -> Fold | Reason:
    found = affine(bn)
    if isinstance(found, Reason):
        return found
    scale, shift = found
    x = bn.inputs[0]
    layer = producer(x)
    if layer is None:
        return Reason(f"its input '{x.name}' is a graph input, not the output of a {', '.join(sorted(LAYERS))}")
    if layer.op not in LAYERS:
        return Reason(f"its input comes from node '{layer.name}' ({layer.op}), not from a {', '.join(sorted(LAYERS))}")
    if len(x.outputs) != 1:
        other = next(n for n in x.outputs if n is not bn)
        return Reason(f"the output of node '{layer.name}' ({layer.op}) is also read by node '{other.name}'")
    if is_output(graph, x):
        return Reason(f"the output of node '{layer.name}' ({layer.op}) is also a graph output")
    w = layer.inputs[1]
    if not isinstance(w, gs.Constant):
        return Reason(f"the weight of node '{layer.name}' ({layer.op}) is not a constant")
    if not only_user(w, layer):
        return Reason(f"the weight of node '{layer.name}' ({layer.op}) is shared with node "
                      f"'{next(n for n in w.outputs if n is not layer).name}'")
    b = layer.inputs[2] if len(layer.inputs) > 2 and layer.inputs[2].name else None
    if b is not None and not isinstance(b, gs.Constant):
        return Reason(f"the bias of node '{layer.name}' ({layer.op}) is not a constant")
    if b is not None and not only_user(b, layer):
        return Reason(f"the bias of node '{layer.name}' ({layer.op}) is shared with node "
                      f"'{next(n for n in b.outputs if n is not layer).name}'")
    if layer.op == "MatMul" and (w.values.ndim != 2 or len(x.shape or []) != 2):
        return Reason(f"node '{layer.name}' (MatMul) is no product of a matrix and a 2-D weight "
                      f"(weight {list(w.values.shape)}, output rank {len(x.shape) if x.shape else 'unknown'})")
    view = LinearLayer.of(layer)  # the weight as rows, one per output feature (Gemm's transB and alpha included)
    if view is None:
        return Reason(f"node '{layer.name}' ({layer.op}) has no linear view with a constant weight")
    channels = scale.shape[0]
    new_w = view.from_rows(view.rows() * scale[:, None])
    bias = 0.0
    if view.bias is not None:
        if layer.op != "Conv" and (view.bias.size not in (1, channels) or (view.bias.ndim == 2 and view.bias.shape[0] != 1)):
            return Reason(f"the bias of node '{layer.name}' (Gemm) has shape {list(view.bias.shape)}, not one value "
                          f"per output feature")
        bias = view.bias.reshape(-1) * view.beta
    return Fold(layer, new_w, np.broadcast_to(bias, (channels,)) * scale + shift)


def rewrite(graph: gs.Graph, bn: gs.Node, fold: Fold):
    layer = fold.layer
    if layer.op != "Conv":
        if layer.op == "MatMul":
            layer.op = "Gemm"
            layer.attrs = {}
        layer.attrs["beta"] = 1.0
    base = bn.outputs[0].name  # tensor names are unique; node names may be empty
    set_tensors(layer.inputs, [layer.inputs[0], gs.Constant(base + "_folded_weight", fold.weight.astype(np.float32)),
                               gs.Constant(base + "_folded_bias", fold.bias.astype(np.float32))])
    set_tensors(layer.outputs, [bn.outputs[0]])
    bn.outputs.clear()


REWRITE = Rewrite("fold_batchnorm", matches, check, rewrite, description=__doc__)
