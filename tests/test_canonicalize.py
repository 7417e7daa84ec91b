"""Canonicalization rewrites the model into fewer ops without changing its outputs."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import zoo
from nnxplain.canonicalize import canonicalize
from nnxplain.load import load
from nnxplain.runtime import session

from conftest import ZOO_DIR, relative_error


def outputs(model, x):
    return session(model).run(None, {model.graph.input[0].name: x})


def ops(model):
    return sorted({n.op_type for n in model.graph.node})


def make_model(nodes, inits, in_shape, out_shape, opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def bn_params(rng, c, prefix="bn"):
    return {f"{prefix}_s": rng.uniform(-1.5, 1.5, c).astype(np.float32), f"{prefix}_b": rng.normal(size=c).astype(np.float32),
            f"{prefix}_m": rng.normal(size=c).astype(np.float32), f"{prefix}_v": rng.uniform(0.5, 2, c).astype(np.float32)}


def bn_node(x, y, prefix="bn"):
    return helper.make_node("BatchNormalization", [x, f"{prefix}_s", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"], [y], epsilon=1e-3)


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_zoo_outputs_are_kept_and_batchnorm_is_folded(name, rng):
    original = load(ZOO_DIR / f"{name}.onnx")
    canonical = canonicalize(original)
    x = rng.normal(size=(3, *zoo.MODELS[name][1])).astype(np.float32)
    assert relative_error(outputs(canonical, x)[0], outputs(original, x)[0]) < 1e-5
    assert "BatchNormalization" not in ops(canonical)
    onnx.checker.check_model(canonical, full_check=True)


def test_batchnorm_after_gemm_and_after_matmul_is_folded(rng):
    w = rng.normal(size=(4, 6)).astype(np.float32)
    inits = {"w": w, "c": rng.normal(size=(1, 4)).astype(np.float32), "w2": rng.normal(size=(4, 5)).astype(np.float32),
             **bn_params(rng, 4, "a"), **bn_params(rng, 5, "b")}
    model = make_model([helper.make_node("Gemm", ["x", "w", "c"], ["g"], transB=1, alpha=0.7, beta=1.3),
                        bn_node("g", "h", "a"), helper.make_node("MatMul", ["h", "w2"], ["m"]), bn_node("m", "y", "b")],
                       inits, ["N", 6], ["N", 5])
    canonical = canonicalize(load(model))
    assert ops(canonical) == ["Gemm"]
    x = rng.normal(size=(7, 6)).astype(np.float32)
    assert relative_error(outputs(canonical, x)[0], outputs(model, x)[0]) < 1e-5


def test_batchnorm_that_cannot_be_folded_becomes_an_affine(rng):
    """On the input itself, and after a conv whose output is also used elsewhere."""
    inits = {"w": rng.normal(size=(3, 2, 3, 3)).astype(np.float32), **bn_params(rng, 2, "a"), **bn_params(rng, 3, "b")}
    model = make_model([bn_node("x", "h", "a"), helper.make_node("Conv", ["h", "w"], ["c"], pads=[1, 1, 1, 1]),
                        bn_node("c", "d", "b"), helper.make_node("Add", ["c", "d"], ["y"])],
                       inits, ["N", 2, 5, 5], ["N", 3, 5, 5])
    canonical = canonicalize(load(model))
    assert "BatchNormalization" not in ops(canonical) and "Mul" in ops(canonical)
    x = rng.normal(size=(2, 2, 5, 5)).astype(np.float32)
    assert relative_error(outputs(canonical, x)[0], outputs(model, x)[0]) < 1e-5


def test_dropout_identity_and_trailing_softmax_are_removed(rng):
    inits = {"w": rng.normal(size=(6, 4)).astype(np.float32), "b": rng.normal(size=4).astype(np.float32)}
    model = make_model([helper.make_node("Identity", ["x"], ["i"]), helper.make_node("Dropout", ["i"], ["d"]),
                        helper.make_node("MatMul", ["d", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["z"]),
                        helper.make_node("Softmax", ["z"], ["y"], axis=1)], inits, ["N", 6], ["N", 4])
    canonical = canonicalize(load(model))
    assert ops(canonical) == ["Gemm"], "MatMul + Add became one Gemm; Identity, Dropout and Softmax are gone"
    assert canonical.graph.output[0].name == "y", "the output keeps its name"
    x = rng.normal(size=(3, 6)).astype(np.float32)
    scores = x @ inits["w"] + inits["b"]
    assert relative_error(outputs(canonical, x)[0], scores) < 1e-5
    kept = canonicalize(load(model), keep_softmax=True)
    assert "Softmax" in ops(kept)
    assert relative_error(outputs(kept, x)[0], outputs(model, x)[0]) < 1e-5


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_auto_pad_becomes_explicit(mode, rng):
    inits = {"w": rng.normal(size=(2, 1, 4, 3)).astype(np.float32)}
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], auto_pad=mode, strides=[2, 1])],
                       inits, ["N", 1, 7, 6], None)
    canonical = canonicalize(load(model))
    conv = canonical.graph.node[0]
    assert helper.get_attribute_value(next(a for a in conv.attribute if a.name == "auto_pad")) == b"NOTSET"
    x = rng.normal(size=(2, 1, 7, 6)).astype(np.float32)
    assert relative_error(outputs(canonical, x)[0], outputs(model, x)[0]) < 1e-5
