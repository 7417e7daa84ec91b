"""Hostile input: a corpus of broken models, several inputs and outputs, atomic output files and
determinism. Every broken model ends in one clear error line (exit 2) or in a correct explainer:
never a traceback (exit 3 or a Python trace), never a hang (each CLI run has a timeout)."""
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import nnxplain
from models import zoo
from nnxplain.runtime import session
from nnxplain.sampling import noise_feeds

from conftest import ZOO_DIR, relative_error

LENET = ZOO_DIR / "lenet_bn.onnx"
RESNET = ZOO_DIR / "resnet.onnx"
TIMEOUT = 120  # seconds per CLI run: far above the ~2 s a run takes; hitting it is a hang


def vi(name, elem=T.FLOAT, shape=("N", 4)):
    return h.make_tensor_value_info(name, elem, list(shape))


def model(nodes, inputs, outputs, inits=(), opset=17):
    graph = h.make_graph(nodes, "g", inputs, outputs, list(inits))
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], ir_version=8)


W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10 - 0.5


def _domain():
    m = model([h.make_node("Relu", ["x"], ["y"], name="n0", domain="com.example")], [vi("x")], [vi("y")])
    m.opset_import.append(h.make_opsetid("com.example", 1))
    return m


def _dynamic_spatial_resnet():
    m = onnx.load(str(RESNET))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].Clear()
    dims[2].dim_param = "H"
    dims[3].Clear()
    dims[3].dim_param = "W"
    del m.graph.value_info[:]
    return m


# name -> (what to write: bytes or a ModelProto, expected: an error substring or a checker(path))
def _check_dynamic_matmul(path):
    for length in (1, 5):
        x = np.random.default_rng(length).normal(size=(2, length, 4)).astype(np.float32)
        grad = session(nnxplain.compile(path, ["gradient"], neuron_selection="all")).run(["gradient"], {"x": x})[0]
        assert np.allclose(grad, np.broadcast_to(W.sum(1), x.shape))


def _check_dynamic_relu(path):
    x = np.random.default_rng(0).normal(size=(3, 7)).astype(np.float32)
    grad = session(nnxplain.compile(path, ["gradient"], neuron_selection="all")).run(["gradient"], {"x": x})[0]
    assert np.array_equal(grad, (x > 0).astype(np.float32))


def _check_zero_size(path):
    out = session(nnxplain.compile(path, ["gradient"])).run(None, {"x": np.zeros((2, 0), np.float32)})
    assert out[0].shape == (2, 3) and out[1].shape == (2, 0)


CORPUS = {
    "truncated": (lambda: LENET.read_bytes()[: LENET.stat().st_size // 2], "not a readable ONNX model"),
    "truncated_header": (lambda: LENET.read_bytes()[:40], "not a readable ONNX model"),
    "not_onnx": (lambda: b"GIF89a this is a picture, not a model \x00\xff" * 20, "not a readable ONNX model"),
    "text_file": (lambda: b"import torch\nprint('hello')\n", "not"),
    "empty": (lambda: b"", "the file is empty"),
    "unknown_domain": (_domain, "from domain 'com.example'"),
    "missing_initializer": (lambda: model([h.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [vi("x")],
                                          [vi("y", shape=("N", 3))]), "node 'mm' (MatMul) reads 'W'"),
    "dangling_input": (lambda: model([h.make_node("Add", ["x", "ghost"], ["y"], name="add")], [vi("x")], [vi("y")]),
                       "node 'add' (Add) reads 'ghost'"),
    "dangling_output": (lambda: model([h.make_node("Relu", ["x"], ["y"], name="r")], [vi("x")], [vi("y"), vi("z")]),
                        "graph output 'z' is produced by no node"),
    "cycle": (lambda: model([h.make_node("Relu", ["x2"], ["a"], name="r1"), h.make_node("Add", ["x", "a"], ["x2"], name="a1")],
                            [vi("x")], [vi("a")]), "the graph has a cycle through node"),
    "unsupported_op": (lambda: model([h.make_node("Erf", ["x"], ["y"], name="erf")], [vi("x")], [vi("y")]),
                       "node 'erf': op Erf has no gradient adapter"),
    "no_nodes": (lambda: model([], [vi("x")], [vi("x")]), "the model has no nodes"),
    "opset_too_new": (lambda: model([h.make_node("Relu", ["x"], ["y"], name="r")], [vi("x")], [vi("y")], opset=99),
                      "opset 99 is not supported"),
    "fp16": (lambda: model([h.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [vi("x", T.FLOAT16)],
                           [vi("y", T.FLOAT16, ("N", 3))], [nh.from_array(W.astype(np.float16), "W")]),
             "input 'x' is float16; only float32 models are supported"),
    "fp64": (lambda: model([h.make_node("Relu", ["x"], ["y"], name="r")], [vi("x", T.DOUBLE)], [vi("y", T.DOUBLE)]),
             "input 'x' is float64; only float32 models are supported"),
    "int8_qdq": (lambda: model([h.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quant"),
                                h.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dequant")],
                               [vi("x")], [vi("y")], [nh.from_array(np.array(0.1, np.float32), "s"),
                                                      nh.from_array(np.array(0, np.int8), "z")]),
                 "node 'quant' (QuantizeLinear) turns the input into int8"),
    "int8_input": (lambda: model([h.make_node("Cast", ["x"], ["y"], name="c", to=T.FLOAT)], [vi("x", T.INT8)], [vi("y")]),
                   "the model has no float input to explain"),
    "wrong_weight_shape": (lambda: model([h.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [vi("x")],
                                         [vi("y", shape=("N", 3))], [nh.from_array(np.ones((5, 3), np.float32), "W")]),
                           "mm"),
    "zero_size_dims": (lambda: model([h.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [vi("x", shape=("N", 0))],
                                     [vi("y", shape=("N", 3))], [nh.from_array(np.ones((0, 3), np.float32), "W")]),
                       _check_zero_size),
    "dynamic_non_batch_dims": (lambda: model([h.make_node("Relu", ["x"], ["y"], name="r")], [vi("x", shape=("N", "L"))],
                                             [vi("y", shape=("N", "L"))]), _check_dynamic_relu),
    "dynamic_sequence_matmul": (lambda: model([h.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
                                              [vi("x", shape=("N", "L", 4))], [vi("y", shape=("N", "L", 3))],
                                              [nh.from_array(W, "W")]), _check_dynamic_matmul),
    # a strided Conv's gradient needs the input's spatial size (its output_padding): one clear error
    "dynamic_spatial_dims_strided": (_dynamic_spatial_resnet, "Conv's transpose needs static dims 2.."),
}


@pytest.fixture(scope="module")
def corpus_runs(tmp_path_factory):
    """Every corpus model through `nnxplain compile`, all started at once (each with a timeout)."""
    folder = tmp_path_factory.mktemp("corpus")
    procs = {}
    for name, (make, _) in CORPUS.items():
        content = make()
        path = folder / f"{name}.onnx"
        path.write_bytes(content if isinstance(content, bytes) else content.SerializeToString())
        out = folder / f"{name}.explainer.onnx"
        procs[name] = (path, out, subprocess.Popen(
            [sys.executable, "-m", "nnxplain", "compile", str(path), "-m", "gradient", "-o", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=folder))
    results = {}
    for name, (path, out, proc) in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            results[name] = (path, out, None, "", "hang")
            continue
        results[name] = (path, out, proc.returncode, stdout, stderr)
    return results


def test_corpus_size():
    # the list: truncated, not ONNX, empty, unknown domain, missing initializer, dangling input,
    # cycle, unsupported op, zero-size dims, dynamic non-batch dims, fp16, int8; plus a few more
    assert len(CORPUS) == 22


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_broken_model_gives_one_clear_error_or_a_correct_explainer(corpus_runs, name):
    path, out, code, stdout, stderr = corpus_runs[name]
    assert code is not None, f"{name}: no answer in {TIMEOUT} s"
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    expected = CORPUS[name][1]
    if isinstance(expected, str):
        assert code == 2, (code, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("nnxplain: error: "), stderr
        assert expected in lines[0], lines[0]
        assert not out.exists()
        assert not [p for p in out.parent.iterdir() if p.name.startswith(".nnxplain-")], "a temporary file is left"
        with pytest.raises(nnxplain.NnxplainError):  # the Python API fails the same way
            nnxplain.compile(path, ["gradient"])
    else:
        assert code == 0, stderr
        onnx.checker.check_model(onnx.load(str(out)), full_check=True)
        expected(path)


# ---------------------------------------------------------------------------- several inputs and outputs


class TwoInTwoOut(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.a = torch.nn.Linear(6, 5)
        self.b = torch.nn.Linear(4, 5)
        self.head1 = torch.nn.Linear(5, 3)
        self.head2 = torch.nn.Linear(5, 2)

    def forward(self, image, meta):
        hidden = torch.relu(self.a(image)) + torch.tanh(self.b(meta))
        return self.head1(hidden), self.head2(torch.sigmoid(hidden) * meta[:, :1])


@pytest.fixture(scope="module")
def two_in_two_out(tmp_path_factory):
    path = tmp_path_factory.mktemp("multi") / "multi.onnx"
    net = TwoInTwoOut().eval()
    args = (torch.randn(2, 6), torch.randn(2, 4))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, args, str(path), dynamo=False, opset_version=17, input_names=["image", "meta"],
                          output_names=["scores", "aux"],
                          dynamic_axes={n: {0: "batch"} for n in ("image", "meta", "scores", "aux")})
    return path, net


@pytest.mark.parametrize("flag", ["--output", "--output-name"])
@pytest.mark.parametrize("output", ["scores", "aux"])
def test_explain_a_chosen_output_with_relevance_for_every_float_input(two_in_two_out, tmp_path, flag, output):
    path, net = two_in_two_out
    out = tmp_path / "explainer.onnx"
    result = subprocess.run([sys.executable, "-m", "nnxplain", "compile", str(path), "-m", "gradient",
                             "-m", "input_t_gradient", flag, output, "-o", str(out)],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    explainer = onnx.load(str(out))
    names = [o.name for o in explainer.graph.output]
    assert names == ["scores", "aux", "gradient/image", "gradient/meta", "input_t_gradient/image",
                     "input_t_gradient/meta"]
    rng = np.random.default_rng(5)
    image, meta = (rng.normal(size=(4, n)).astype(np.float32) for n in (6, 4))
    got = dict(zip(names, session(explainer).run(None, {"image": image, "meta": meta})))
    ti, tm = torch.from_numpy(image).requires_grad_(True), torch.from_numpy(meta).requires_grad_(True)
    y = net(ti, tm)[0 if output == "scores" else 1]
    y.gather(1, y.argmax(1)[:, None]).sum().backward()
    assert relative_error(got["gradient/image"], ti.grad.numpy()) < 1e-5
    assert relative_error(got["gradient/meta"], tm.grad.numpy()) < 1e-5
    assert relative_error(got["input_t_gradient/meta"], tm.grad.numpy() * meta) < 1e-5


def test_unknown_output_is_named(two_in_two_out):
    with pytest.raises(nnxplain.NnxplainError, match="no output 'nope' \\(outputs: scores, aux\\)"):
        nnxplain.compile(two_in_two_out[0], ["gradient"], output="nope")


# ---------------------------------------------------------------------------- atomic writes


def test_a_failure_while_writing_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
    from nnxplain import runtime
    out = tmp_path / "out.onnx"
    out.write_bytes(b"precious")

    class DiskFull(OSError):
        pass

    real_fdopen = os.fdopen

    def failing_fdopen(fd, mode="r", *args, **kwargs):
        f = real_fdopen(fd, mode, *args, **kwargs)
        real_write = f.write

        def write(data):
            real_write(data[: len(data) // 2])  # half of it reaches the disk, then the disk is full
            raise DiskFull("no space left on device")
        f.write = write
        return f

    monkeypatch.setattr(runtime.os, "fdopen", failing_fdopen)
    with pytest.raises(nnxplain.NnxplainError, match="out.onnx: cannot write the file \\(no space left on device\\)"):
        runtime.write_atomic(out, b"x" * 1000)
    assert out.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]


def test_compile_output_replaces_the_old_file_whole(tmp_path):
    out = tmp_path / "out.onnx"
    out.write_bytes(b"old" * 100000)
    result = subprocess.run([sys.executable, "-m", "nnxplain", "compile", str(LENET), "-m", "gradient", "-o", str(out)],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    onnx.checker.check_model(onnx.load(str(out)))
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]


# ---------------------------------------------------------------------------- determinism

DETERMINISTIC = ["gradient", "input_t_gradient", "guided_backprop", "deconvnet", "lrp.epsilon",
                 "lrp.alpha_2_beta_1", "deep_taylor", "random", "smoothgrad", "integrated_gradients"]


@pytest.mark.parametrize("name", ["resnet", "mobilenet_relu6", "concat_cnn"])
def test_same_input_gives_bit_identical_explanations(name):
    path = ZOO_DIR / f"{name}.onnx"
    first, second = (nnxplain.compile(path, DETERMINISTIC) for _ in range(2))
    assert first.SerializeToString() == second.SerializeToString(), "compiling is deterministic"
    x = np.random.default_rng(11).normal(size=(4, *zoo.MODELS[name][1])).astype(np.float32)
    sessions = [session(m) for m in (first, second, first)]
    runs = [s.run(None, {"input": x, **noise_feeds(s, x)}) for s in sessions]  # smoothgrad's seeded noise
    for a, b in zip(runs[0], runs[1]):
        assert a.tobytes() == b.tobytes()
    for a, b in zip(runs[0], runs[2]):
        assert a.tobytes() == b.tobytes()


def test_analyze_is_bit_identical_across_processes(tmp_path):
    x = np.random.default_rng(12).normal(size=(3, 1, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    procs = [subprocess.Popen([sys.executable, "-m", "nnxplain", "analyze", str(LENET), "-m", method,
                               "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / f"{method}{i}.npy")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for method in ("lrp.epsilon", "random", "smoothgrad") for i in range(2)]
    for p in procs:
        assert p.wait(timeout=TIMEOUT) == 0, p.stderr.read()
    for method in ("lrp.epsilon", "random", "smoothgrad"):
        assert (tmp_path / f"{method}0.npy").read_bytes() == (tmp_path / f"{method}1.npy").read_bytes()
