"""The backward pass keeps the shapes that ONNX Runtime's own inference can follow.

An explainer file stores no intermediate shapes (portable.py, rule 3). ONNX Runtime then infers them
itself, without data propagation: a Reshape or Expand to a run-time Shape(x) gets unknown dims, and
so does everything downstream of it. With unknown dims its memory planner takes time quadratic in
the depth of the graph to load it (an 8000-node Relu chain's gradient explainer: 40 s, against 1.5 s
with the shapes inferable; README: Scale). So the rules reshape and broadcast to constant targets
where the forward graph knows the dims (0 or 1 standing for the batch symbol), and the neuron
selection of a [batch, scores] output needs no reshape at all.

The yardstick here is onnx's shape inference without data propagation, which leaves the same dims
unknown as ONNX Runtime's. What may stay unknown: the one-hot's neuron axis (its depth is read from
the run-time shape on purpose, compiler.selection_mask) and the per-sample validity flags (bool).
"""
from __future__ import annotations

import onnx
import pytest

import nnxplain
from conftest import ZOO_DIR, model, tensor


def unknown_dims(model: onnx.ModelProto) -> list[tuple[str, str, int]]:
    """(op, tensor, element type) of every inferred tensor with a dim inference cannot name."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=False)
    producer = {out: node.op_type for node in inferred.graph.node for out in node.output}
    unknown = []
    for value in inferred.graph.value_info:
        t = value.type.tensor_type
        if not t.HasField("shape") or any(not d.HasField("dim_value") and (not d.dim_param or d.dim_param.startswith("unk__"))
                                          for d in t.shape.dim):
            unknown.append((producer.get(value.name, "?"), value.name, t.elem_type))
    return unknown


def unexpected(model: onnx.ModelProto) -> list:
    return [u for u in unknown_dims(model) if u[0] != "OneHot" and u[2] != onnx.TensorProto.BOOL]


@pytest.mark.parametrize("arch", ["resnet", "mlp"])  # residual adds, BN-folded convs, global average pooling; Gemm
@pytest.mark.parametrize("method", ["gradient", "input_t_gradient", "guided_backprop", "lrp.epsilon",
                                    "lrp.alpha_2_beta_1"])
@pytest.mark.parametrize("selection", ["max_activation", "index", "all"])
def test_every_backward_shape_is_inferable(arch, method, selection):
    explainer = nnxplain.compile(str(ZOO_DIR / f"{arch}.onnx"), [method], neuron_selection=selection)
    assert unexpected(explainer) == []


def test_the_yardstick_sees_a_reshape_to_a_run_time_shape():
    """The check above can fail: a Reshape to Shape(x) leaves its dims unknown to inference."""
    from onnx.helper import make_node
    reshaped = model([make_node("Shape", ["x"], ["s"]), make_node("Relu", ["x"], ["r"]),
                      make_node("Reshape", ["r", "s"], ["y"]), make_node("Neg", ["y"], ["z"])],
                     [tensor("x", ("N", 8))], [tensor("z", None)])
    assert [u[:2] for u in unexpected(reshaped)] == [("Reshape", "y")]
