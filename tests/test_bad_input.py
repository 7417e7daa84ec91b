"""Bad input gets one clear message that names what is wrong, a non-zero exit and no output file;
odd but valid input (old opsets, external data) just works."""
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import nnxplain
from nnxplain.runtime import session

from conftest import UNSUPPORTED_OP, ZOO_DIR, model, relative_error, tensor

LENET = str(ZOO_DIR / "lenet_bn.onnx")


def cli(*args, cwd=None):
    result = subprocess.run([sys.executable, "-m", "nnxplain", *map(str, args)], capture_output=True, text=True, cwd=cwd)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def tiny_model(op="Relu", opset=17, **attrs):
    return model([helper.make_node(op, ["x"], ["y"], name="the_node", **attrs)], [tensor("x")], [tensor("y")], opset=opset)


@pytest.mark.parametrize("content, expected", [
    (None, "no such file"),
    (b"", "the file is empty"),
    (b"this is not onnx at all \x00\xff", "not a readable ONNX model"),
])
def test_unreadable_model(tmp_path, content, expected):
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "out.onnx"
    result = cli("compile", path, "--method", "gradient", "-o", out)
    assert result.returncode == 2 and expected in result.stderr and str(path) in result.stderr
    assert not out.exists()


def test_truncated_model(tmp_path):
    path = tmp_path / "truncated.onnx"
    path.write_bytes(open(LENET, "rb").read()[:3000])
    result = cli("compile", path, "-m", "gradient", "-o", tmp_path / "out.onnx")
    assert result.returncode == 2 and "nnxplain: error:" in result.stderr


def test_unsupported_op_names_the_op_and_the_node(tmp_path):
    path = tmp_path / "unsupported.onnx"
    onnx.save(tiny_model(UNSUPPORTED_OP), path)
    result = cli("compile", path, "-m", "gradient", "-o", tmp_path / "out.onnx")
    assert result.returncode == 2
    assert f"op {UNSUPPORTED_OP} " in result.stderr and "the_node" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(nnxplain.UnsupportedError, match="the_node"):
        nnxplain.compile(path, ["gradient"])


def test_a_failed_compile_keeps_an_existing_output(tmp_path):
    out = tmp_path / "out.onnx"
    out.write_bytes(b"precious")
    onnx.save(tiny_model(UNSUPPORTED_OP), tmp_path / "unsupported.onnx")
    assert cli("compile", tmp_path / "unsupported.onnx", "-m", "gradient", "-o", out).returncode == 2
    assert out.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] != [] and not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


@pytest.mark.parametrize("args, expected", [
    (["-m", "no_such_method"], "unknown method 'no_such_method'"),
    (["-m", "gradient", "--param", "postprocess"], "not of the form key=value"),
    (["-m", "gradient", "--param", "epsilon=0.1"], "parameter 'epsilon' belongs to none of the methods"),
    (["-m", "gradient", "--param", "postprocess=cube"], "'postprocess' must be one of"),
    (["-m", "gradient", "--output-name", "nope"], "the model has no output 'nope'"),
    ([], "give at least one --method"),
])
def test_bad_method_arguments(tmp_path, args, expected):
    out = tmp_path / "out.onnx"
    result = cli("compile", LENET, *args, "-o", out)
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert not out.exists()


@pytest.mark.parametrize("array, expected", [
    (np.zeros((2, 1, 15, 16), np.float32), "input 'input' expects shape ['batch', 1, 16, 16], got [2, 1, 15, 16]"),
    (np.zeros((2, 16, 16), np.float32), "expects shape"),
    (np.zeros((2, 1, 16, 16), np.int32), "input 'input' expects float32 data, got int32"),
])
def test_analyze_rejects_wrong_shape_or_dtype(tmp_path, array, expected):
    np.save(tmp_path / "x.npy", array)
    result = cli("analyze", LENET, "-m", "gradient", "--input", tmp_path / "x.npy", "-o", tmp_path / "r.npy")
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert not (tmp_path / "r.npy").exists()
    analyzer = nnxplain.create_analyzer("gradient", LENET)
    with pytest.raises(nnxplain.NnxplainError, match="expects"):
        analyzer.analyze(array)


def test_analyze_writes_the_explanation(tmp_path):
    x = np.random.default_rng(0).normal(size=(3, 1, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = cli("analyze", LENET, "-m", "gradient", "--input", tmp_path / "x.npy", "-o", tmp_path / "r.npy")
    assert result.returncode == 0, result.stderr
    expected = nnxplain.create_analyzer("gradient", LENET).analyze(x)
    assert np.array_equal(np.load(tmp_path / "r.npy"), expected)
    assert (tmp_path / "r.npy").stat().st_mode & 0o044, "readable by others, as a plainly written file"


def test_float64_data_is_accepted_as_float32():
    x = np.random.default_rng(1).normal(size=(2, 1, 16, 16))
    analyzer = nnxplain.create_analyzer("gradient", LENET)
    assert np.array_equal(analyzer.analyze(x), analyzer.analyze(x.astype(np.float32)))


def test_cli_methods_and_support(tmp_path):
    listed = cli("methods")
    assert listed.returncode == 0
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert {"gradient", "input_t_gradient", "deconvnet", "guided_backprop", "input", "random"} <= set(names)
    support = cli("support", LENET, "-m", "guided_backprop", "-m", "gradient")  # the rule columns of these methods
    assert support.returncode == 0 and "Conv" in support.stdout
    lines = support.stdout.splitlines()
    header = next(line.split() for line in lines if line.split()[:2] == ["node", "op"])
    relu_rows = [dict(zip(header, line.split())) for line in lines if " Relu " in line]
    assert relu_rows and all(row["guided_backprop"] == "guided_backprop" and row["gradient"] == "gradient"
                             for row in relu_rows), "ReLUs get the method's rule, every other node its gradient"
    onnx.save(tiny_model(UNSUPPORTED_OP), tmp_path / "unsupported.onnx")
    unsupported = cli("support", tmp_path / "unsupported.onnx", "-m", "gradient")
    assert "NO ADAPTER" in unsupported.stdout and "not applicable" in unsupported.stdout


@pytest.mark.parametrize("opset", [11, 13, 15])
def test_older_opsets_are_converted(opset):
    model = tiny_model("LeakyRelu", opset=opset, alpha=0.2)
    x = np.array([[-1, 0.5, 2, -3]], np.float32)
    grad = session(nnxplain.compile(model, ["gradient"], neuron_selection="all")).run(["gradient"], {"x": x})[0]
    assert np.allclose(grad, np.where(x > 0, 1, 0.2))


@pytest.mark.parametrize("opset", [9, 22])
def test_opsets_out_of_range_are_refused(opset):
    with pytest.raises(nnxplain.NnxplainError, match=f"opset {opset} is not supported"):
        nnxplain.compile(tiny_model(opset=opset), ["gradient"])


def test_model_with_external_data(tmp_path):
    model = onnx.load(LENET)
    onnx.save(model, tmp_path / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    assert (tmp_path / "ext.onnx.data").exists()
    x = np.random.default_rng(2).normal(size=(2, 1, 16, 16)).astype(np.float32)
    a = nnxplain.create_analyzer("gradient", str(tmp_path / "ext.onnx")).analyze(x)
    b = nnxplain.create_analyzer("gradient", LENET).analyze(x)
    assert relative_error(a, b) < 1e-6


def test_foreign_op_domain_is_named():
    model = tiny_model()
    model.graph.node[0].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(nnxplain.UnsupportedError, match="domain 'com.example'"):
        nnxplain.compile(model, ["gradient"])


def test_index_selection_needs_neurons():
    analyzer = nnxplain.create_analyzer("gradient", LENET, neuron_selection_mode="index")
    with pytest.raises(nnxplain.NnxplainError, match="neuron_selection"):
        analyzer.analyze(np.zeros((1, 1, 16, 16), np.float32))
