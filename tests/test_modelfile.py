"""Explainer files at any size: weights beside the .onnx (external data) when asked, and always above
protobuf's 2 GiB limit; ONNX Runtime and onnx.load read the pair back."""
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnxplain
from nnxplain import modelfile
from nnxplain.runtime import session

from conftest import ZOO_DIR, relative_error

DIGITS = str(ZOO_DIR / "digits_cnn.onnx")


def digits_input(n=4):
    return np.load(ZOO_DIR / "digits_test.npz")["x"][:n].astype(np.float32)


def test_external_data_writes_the_weights_beside_the_graph(tmp_path):
    explainer = nnxplain.compile(DIGITS, ["gradient", "lrp.epsilon"])
    path = tmp_path / "explainer.onnx"
    written = modelfile.save(explainer, path, external_data=True)
    assert written == [str(path), str(path) + ".data"]
    assert sorted(os.listdir(tmp_path)) == ["explainer.onnx", "explainer.onnx.data"]  # no temporary left over
    assert path.stat().st_size < 64 * 1024 < (tmp_path / "explainer.onnx.data").stat().st_size

    reloaded = onnx.load(str(path))  # onnx reads the weights back from the .data file
    original = {t.name: numpy_helper.to_array(t) for t in explainer.graph.initializer}
    assert {t.name: numpy_helper.to_array(t).tobytes() for t in reloaded.graph.initializer} == \
        {name: a.tobytes() for name, a in original.items()}

    x = digits_input()
    inline = session(explainer).run(None, {"input": x})
    import onnxruntime as ort
    beside = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    for a, b in zip(inline, beside):
        np.testing.assert_array_equal(a, b)
    assert len(explainer.graph.initializer) == len(original)  # the caller's model is not changed
    assert all(t.data_location != TensorProto.EXTERNAL for t in explainer.graph.initializer)


def test_small_explainers_stay_one_file(tmp_path):
    path = tmp_path / "explainer.onnx"
    assert modelfile.save(nnxplain.compile(DIGITS, ["gradient"]), path) == [str(path)]
    assert os.listdir(tmp_path) == ["explainer.onnx"]


def test_cli_compile_external_data(tmp_path):
    out = tmp_path / "e.onnx"
    run = subprocess.run([sys.executable, "-m", "nnxplain", "compile", DIGITS, "-m", "gradient", "--external-data",
                          "-o", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "e.onnx.data" in run.stdout
    assert (tmp_path / "e.onnx.data").exists()
    analyzer = nnxplain.create_analyzer("gradient", DIGITS)
    import onnxruntime as ort
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["gradient"], {"input": digits_input()})[0]
    np.testing.assert_array_equal(got, analyzer.analyze(digits_input()))


def test_one_file_is_refused_above_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(modelfile, "INLINE_LIMIT", 1000)
    with pytest.raises(nnxplain.NnxplainError, match="more than one ONNX file can hold"):
        modelfile.save(nnxplain.compile(DIGITS, ["gradient"]), tmp_path / "e.onnx", external_data=False)
    assert os.listdir(tmp_path) == []


def positive_weights(width: int, layers: int, seed: int = 0):
    """The layers' weights, positive, one at a time (drawn again for the reference: the test holds one
    copy of the weights less)."""
    rng = np.random.default_rng(seed)
    for _ in range(layers):
        w = rng.random((width, width), dtype=np.float32)
        w *= np.float32(2.0 / width)
        yield w


def positive_mlp(width: int, layers: int, seed: int = 0) -> onnx.ModelProto:
    """Gemm + Relu layers with positive weights: every pre-activation of a positive input is positive,
    so the gradient is the plain product of the weight matrices (no ReLU is near its kink)."""
    nodes, inits, x = [], [], "x"
    for i, w in enumerate(positive_weights(width, layers, seed)):
        inits.append(numpy_helper.from_array(w, f"W{i}"))
        nodes += [helper.make_node("Gemm", [x, f"W{i}"], [f"z{i}"], transB=1),
                  helper.make_node("Relu", [f"z{i}"], [f"h{i}"])]
        x = f"h{i}"
    graph = helper.make_graph(nodes, "positive_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def test_an_explainer_beyond_2_gib_is_written_and_run_with_external_data(tmp_path):
    """1.5 GiB of weights; the gradient and lrp.epsilon explainer holds them plus the transposed copies
    the backward passes read, over 2 GiB: it is written as .onnx + .data, and runs."""
    width, layers = 11600, 3
    model = positive_mlp(width, layers)
    assert modelfile.weight_bytes(model) > 1.5 * 2**30
    explainer = nnxplain.compile(model, ["gradient", "lrp.epsilon"], neuron_selection="index")
    del model
    assert modelfile.needs_external_data(explainer)
    path = tmp_path / "big.onnx"
    assert modelfile.save(explainer, path) == [str(path), str(path) + ".data"]  # automatic above the limit
    assert path.stat().st_size < 2**20

    x = np.random.default_rng(1).random((2, width), dtype=np.float32)
    neuron = np.array([0, 5], np.int64)
    sess = session(explainer)  # the Python path: handed to ONNX Runtime through a temporary .data file
    del explainer
    gradient, epsilon = sess.run(["gradient", "lrp.epsilon"], {"x": x, "neuron": neuron})
    del sess
    expected = np.zeros((len(neuron), width))  # d y_k / d x = e_k W_L ... W_1, in float64
    expected[np.arange(len(neuron)), neuron] = 1.0
    for w in reversed(list(positive_weights(width, layers))):
        expected = expected @ w.astype(np.float64)
    assert relative_error(gradient, expected) < 1e-5
    # zero bias, every pre-activation positive: LRP-epsilon is input x gradient
    assert relative_error(epsilon, x * expected) < 1e-5


def test_the_graph_and_its_weights_are_written_both_or_neither(tmp_path):
    (tmp_path / "e.onnx.data").mkdir()  # the weights cannot be written there
    with pytest.raises(nnxplain.NnxplainError, match="e.onnx.data: is a folder"):
        modelfile.save(nnxplain.compile(DIGITS, ["gradient"]), tmp_path / "e.onnx", external_data=True)
    assert sorted(os.listdir(tmp_path)) == ["e.onnx.data"]  # no .onnx pointing at missing weights, no temporary
