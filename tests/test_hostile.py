"""Hostile input: a corpus of broken models, several inputs and outputs, atomic output files and
determinism. Every broken model ends in one clear error line (exit 2) or in a correct explainer:
never a traceback (exit 3 or a Python trace), never a hang (each CLI run has a timeout)."""
import io
import json
import os
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import nnxplain
from models import zoo
from nnxplain.methods import load_method
from nnxplain.runtime import session
from nnxplain.sampling import noise_feeds

from conftest import UNSUPPORTED_OP, ZOO_DIR, relative_error
from conftest import model as _model
from conftest import tensor

LENET = ZOO_DIR / "lenet_bn.onnx"
RESNET = ZOO_DIR / "resnet.onnx"
TIMEOUT = 120  # seconds per CLI run: far above the ~2 s a run takes; hitting it is a hang


def vi(name, elem=T.FLOAT, shape=("N", 4)):
    return tensor(name, shape, elem)


def model(nodes, inputs, outputs, inits=(), opset=17):
    return _model(nodes, inputs, outputs, inits, opset)


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
def _sequence_matmul():
    """y [N, L, 3] = x [N, L, 4] W: scores at every position of a dynamic sequence."""
    return model([h.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [vi("x", shape=("N", "L", 4))],
                 [vi("y", shape=("N", "L", 3))], [nh.from_array(W, "W")])


def _check_dynamic_matmul(path):
    for length in (1, 5):
        x = np.random.default_rng(length).normal(size=(2, length, 4)).astype(np.float32)
        grad = session(nnxplain.compile(path, ["gradient"], neuron_selection="all")).run(["gradient"], {"x": x})[0]
        assert np.allclose(grad, np.broadcast_to(W.sum(1), x.shape))


def _check_dynamic_relu(path):
    x = np.random.default_rng(0).normal(size=(3, 7)).astype(np.float32)
    grad = session(nnxplain.compile(path, ["gradient"], neuron_selection="all")).run(["gradient"], {"x": x})[0]
    assert np.array_equal(grad, (x > 0).astype(np.float32))


def _check_dynamic_spatial_resnet(path):
    """The gradient and integrated gradients at a size other than the exported one, against torch."""
    net = zoo.twin("resnet")
    x = torch.randn(2, 3, 19, 21, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = net(x)
    y.gather(1, y.argmax(1, keepdim=True)).sum().backward()
    model = nnxplain.compile(path, ["gradient", "integrated_gradients"], params={"steps": 4})
    grad, ig = session(model).run(["gradient", "integrated_gradients"], {"input": x.detach().numpy()})
    assert relative_error(grad, x.grad.numpy()) < 1e-5
    assert ig.shape == x.shape and np.isfinite(ig).all()


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
    "unsupported_op": (lambda: model([h.make_node(UNSUPPORTED_OP, ["x"], ["y"], name="odd")], [vi("x")], [vi("y")]),
                       f"node 'odd': op {UNSUPPORTED_OP} has no gradient adapter"),
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
    # scores per position and no causal mask: which position to explain is the user's to say
    "dynamic_sequence_matmul": (lambda: _sequence_matmul(),
                                "scores per position: choose the position to explain with --position"),
    # a strided Conv's gradient fits its transpose to the input's size at run time
    "dynamic_spatial_dims_strided": (_dynamic_spatial_resnet, _check_dynamic_spatial_resnet),
}


# ---------------------------------------------------------------------------- round two: the whole command line
# Each case is a command line (after `nnxplain`) run in a folder of its own, with the files it needs
# made there first: `files` maps a file name to what goes in it (bytes, a ModelProto, an array for
# .npy, a dict of arrays for .npz, text for .toml, or a callable giving one of these).

MLP = str(ZOO_DIR / "mlp.onnx")            # input [N, 20], 5 scores
LENET_PATH = str(LENET)                    # input [N, 1, 16, 16], 10 scores; GlobalAveragePool-free
DIGITS = str(ZOO_DIR / "digits_cnn.onnx")  # input [N, 1, 8, 8], 10 scores


class Cli(NamedTuple):
    args: tuple
    expected: object         # an error substring (exit 2, one line), or check(folder, stdout, stderr) for a run that works
    files: dict = {}
    shell: bool = False      # args[0] is a shell command line (pipes)


def _if_model(constant_condition: bool):
    then_branch = h.make_graph([h.make_node("Identity", ["x"], ["t"])], "then", [], [vi("t")])
    else_branch = h.make_graph([h.make_node("Relu", ["x"], ["r"])], "else", [], [vi("r")])
    nodes = [h.make_node("If", ["c"], ["h"], name="the_if", then_branch=then_branch, else_branch=else_branch),
             h.make_node("MatMul", ["h", "W"], ["y"], name="mm")]
    inputs, inits = [vi("x")], [nh.from_array(W, "W")]
    if constant_condition:
        inits.append(nh.from_array(np.array(False), "c"))
    else:
        inputs.append(h.make_tensor_value_info("c", T.BOOL, []))
    return model(nodes, inputs, [vi("y", shape=("N", 3))], inits)


def _loop_model():
    """A Loop whose body adds the outer x to its carried value: it captures the explained input."""
    body = h.make_graph([h.make_node("Identity", ["cond_in"], ["cond_out"]),
                         h.make_node("Add", ["v_in", "x"], ["v_out"])], "body",
                        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
                         vi("v_in")], [h.make_tensor_value_info("cond_out", T.BOOL, []), vi("v_out")])
    nodes = [h.make_node("Loop", ["trips", "", "x"], ["h"], name="the_loop", body=body),
             h.make_node("MatMul", ["h", "W"], ["y"], name="mm")]
    return model(nodes, [vi("x")], [vi("y", shape=("N", 3))],
                 [nh.from_array(W, "W"), nh.from_array(np.array(3, np.int64), "trips")])


def _check_if_folded(folder, stdout, stderr):
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    grad = session(str(folder / "out.onnx")).run(["gradient"], {"x": x})[0]
    assert np.allclose(grad, (x > 0) * W.sum(1)), "the constant condition picks the Relu branch"


def _fold_bomb():
    """216 bytes whose constant folding would build a 4 GiB tensor."""
    nodes = [h.make_node("ConstantOfShape", ["shape"], ["big"], name="huge", value=nh.from_array(np.ones(1, np.float32))),
             h.make_node("ReduceSum", ["big"], ["s"], name="sum", keepdims=0),
             h.make_node("Mul", ["x", "s"], ["y"], name="scale")]
    return model(nodes, [vi("x")], [vi("y")], [nh.from_array(np.array([1 << 15, 1 << 15], np.int64), "shape")])


def _short_weight():
    w = nh.from_array(np.ones((40, 40), np.float32), "W")
    w.raw_data = w.raw_data[:100]
    return model([h.make_node("MatMul", ["x", "W"], ["y"], name="mm")], [vi("x", shape=("N", 40))],
                 [vi("y", shape=("N", 40))], [w])


def _runtime_reshape_failure():
    """A Reshape to a fixed [2, 4]: compiles, but ONNX Runtime fails on a batch of 3."""
    return model([h.make_node("Reshape", ["x", "s"], ["y"], name="fixed")], [vi("x")], [vi("y", shape=(2, 4))],
                 [nh.from_array(np.array([2, 4], np.int64), "s")])


def _npy_header_claiming(shape) -> bytes:
    """An .npy file whose header claims `shape` (float32) but that holds 16 bytes of data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + b"\0" * 16


def _npz_bomb() -> bytes:
    """A small zip whose one member is a 256 MiB array of zeros (deflate packs it ~1000:1)."""
    buffer = io.BytesIO()
    rows, cols = 1 << 12, 1 << 14
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        meta = io.BytesIO()
        np.save(meta, np.array(json.dumps({"format": "nnxplain-patterns-1", "pattern_type": "relu", "fingerprint": "x",
                                            "samples": 1, "layers": ["/net/net.0/Conv"]})))
        z.writestr("__meta__.npy", meta.getvalue())
        with z.open("/net/net.0/Conv.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": (rows, cols)})
            zeros = bytes(1 << 22)
            for _ in range(rows * cols * 4 // len(zeros)):
                member.write(zeros)
    return buffer.getvalue()


def _patterns(mutate=None):
    """A patterns file of the digits model (weights as patterns), optionally changed by mutate(rows)."""
    def make():
        from nnxplain.support import stand_in_patterns
        patterns = stand_in_patterns(onnx.load(DIGITS))
        if mutate is not None:
            mutate(patterns.rows)
        buffer = io.BytesIO()
        meta = {"format": "nnxplain-patterns-1", "pattern_type": patterns.pattern_type,
                "fingerprint": patterns.fingerprint, "samples": 1, "layers": list(patterns.rows)}
        np.savez(buffer, __meta__=np.array(json.dumps(meta)), **{k: v.astype(np.float32) for k, v in patterns.rows.items()})
        return buffer.getvalue()
    return make


def _with_nan(rows):
    rows[next(iter(rows))][0, 0] = np.nan


def _train_with_nan_rows():
    x = np.load(ZOO_DIR / "digits_train.npz")["x"][:64].copy()
    x[[3, 17], 0, 2, 2] = [np.nan, np.inf]
    return x


def _check_fit_skipped(folder, stdout, stderr):
    assert "fitted on 62 samples; 2 samples with NaN or inf skipped" in stdout, stdout
    assert stderr.startswith("nnxplain: warning: data: 2 of 64 samples hold NaN or inf") and stderr.count("\n") == 1
    from nnxplain.patterns import Patterns
    patterns = Patterns.load(folder / "p.npz")
    assert all(np.isfinite(rows).all() for rows in patterns.rows.values()) and patterns.skipped == 2


def _check_finite_output(name="r.npy"):
    def check(folder, stdout, stderr):
        result = np.load(folder / name)
        assert np.isfinite(result).all() and np.abs(result).max() > 0
    return check


def _check_nan_sample(folder, stdout, stderr):
    assert "nnxplain: warning: x.npy: 1 of 3 samples hold NaN or inf (the first: sample 1); their explanations are NaN" \
        in stderr and stderr.count("\n") == 1, stderr
    result = np.load(folder / "r.npy")
    assert np.isnan(result[1]).all() and np.isfinite(result[[0, 2]]).all()


def _check_empty(folder, stdout, stderr):
    assert np.load(folder / "r.npy").shape == (0, 20)


def _check_quiet(folder, stdout, stderr):
    assert stderr == "", stderr


def _rules(text, **parts):
    """A method file (and files beside it)."""
    return {"m.toml": text, **parts}


def _rules_case(text, expected, model=DIGITS, **parts):
    return Cli(("compile", model, "--rules", "m.toml", "-o", "out.onnx"), expected, _rules(text, **parts))


EPS_FILE = 'include = "_lrp_base"\n[[rule]]\nops = ["convolution", "linear"]\nrule = "epsilon"\n'
X20 = np.random.default_rng(1).normal(size=(3, 20)).astype(np.float32)
X20_NAN = X20.copy()
X20_NAN[1, 4] = np.nan
LENET_X = np.random.default_rng(2).normal(size=(2, 1, 16, 16)).astype(np.float32)


def _compile(*args, model=MLP):
    return ("compile", model, *args, "-o", "out.onnx")


def _analyze(*args, model=MLP, x="x.npy"):
    return ("analyze", model, "--input", x, *args)


CORPUS.update({
    # 1: an op with a subgraph that reads the explained input: refused by name (a constant condition is folded)
    "if_captures_input": (lambda: _if_model(False), "node 'the_if' (If) reads 'x', which depends on the explained input"),
    "loop_captures_input": (_loop_model, "node 'the_loop' (Loop) reads 'x'"),
    "dynamic_sequence_matmul_all": Cli(("compile", "model.onnx", "-m", "gradient", "--neuron-selection", "all", "-o",
                                        "out.onnx"), lambda folder, out, err: _check_dynamic_matmul(folder / "model.onnx"),
                                       {"model.onnx": lambda: _sequence_matmul()}),
    "if_constant_condition": Cli(("compile", "if.onnx", "-m", "gradient", "--neuron-selection", "all", "-o", "out.onnx"),
                                 _check_if_folded, {"if.onnx": lambda: _if_model(True)}),
    # 2, 4: parameters out of range are refused at compile time, in one place
    "random_stddev_zero": Cli(_compile("-m", "random", "-p", "stddev=0"), "parameter 'stddev' must be a finite number > 0"),
    "random_stddev_negative": Cli(_compile("-m", "random", "-p", "stddev=-1"), "parameter 'stddev' must be"),
    "random_stddev_nan": Cli(_compile("-m", "random", "-p", "stddev=nan"), "got nan"),
    "epsilon_nan": Cli(_compile("-m", "lrp.epsilon", "-p", "epsilon=nan"),
                       "parameter 'epsilon' must be a finite number >= 0"),
    "epsilon_negative": Cli(_compile("-m", "lrp.epsilon", "-p", "epsilon=-0.1"), "parameter 'epsilon' must be"),
    "epsilon_beyond_float32": Cli(_compile("-m", "lrp.epsilon", "-p", "epsilon=1e39"), "got 1e+39"),
    "epsilon_zero_is_the_safe_z_rule": Cli(_analyze("-m", "lrp.epsilon", "-p", "epsilon=0", "-o", "r.npy"),
                                           _check_finite_output(), {"x.npy": X20}),
    "alpha_nan": Cli(_compile("-m", "lrp.alpha_beta", "-p", "alpha=nan"), "parameter 'alpha' must be a finite number"),
    "alpha_beta_inconsistent": Cli(_compile("-m", "lrp.alpha_beta", "-p", "alpha=3", "-p", "beta=1"), "alpha - beta = 1"),
    "beta_negative": Cli(_compile("-m", "lrp.alpha_beta", "-p", "beta=-1"), "parameter 'beta' must be"),
    "gamma_negative": Cli(_compile("-m", "epsilon_gamma_box", "-p", "low=0", "-p", "high=1", "-p", "gamma=-1",
                                   model=LENET_PATH), "parameter 'gamma' must be"),
    "bounded_low_above_high": Cli(_compile("-m", "deep_taylor.bounded", "-p", "low=1", "-p", "high=0"),
                                  "rule 'bounded' needs low <= high"),
    "ig_reference_nan": Cli(_compile("-m", "integrated_gradients", "-p", "reference_inputs=nan"),
                            "parameter 'reference_inputs' must be a finite number"),
    "deeplift_reference_inf": Cli(_compile("-m", "deeplift", "-p", "reference_inputs=inf"), "got inf"),
    "noise_scale_negative": Cli(_compile("-m", "smoothgrad", "-p", "noise_scale=-1"), "parameter 'noise_scale' must be"),
    "steps_zero": Cli(_compile("-m", "integrated_gradients", "-p", "steps=0"), "parameter 'steps' must be at least 1"),
    "chunk_negative": Cli(_compile("-m", "integrated_gradients", "-p", "chunk=-1"), "parameter 'chunk' must be"),
    "chunk_too_many_blocks": Cli(_compile("-m", "integrated_gradients", "-p", "steps=4096", "-p", "chunk=1"),
                                 "make 4096 copies of the model"),
    # 3: non-finite training rows are skipped with a count; non-finite patterns are refused
    "fit_with_nan_rows": Cli(("fit", DIGITS, "--data", "train.npy", "-o", "p.npz"), _check_fit_skipped,
                             {"train.npy": _train_with_nan_rows}),
    "fit_all_rows_nan": Cli(("fit", DIGITS, "--data", "train.npy", "-o", "p.npz"), "(all 4 hold NaN or inf)",
                            {"train.npy": np.full((4, 1, 8, 8), np.nan, np.float32)}),
    "patterns_with_nan": Cli(_compile("-m", "pattern.attribution", "--patterns", "p.npz", model=DIGITS),
                             "has non-finite entries (NaN or inf)", {"p.npz": _patterns(_with_nan)}),
    # 5: a neuron index out of range is refused (the compiled graph answers NaN for it: test below)
    "neuron_past_the_end": Cli(_analyze("-m", "gradient", "--neuron-selection", "index", "--neuron", "99", "-o", "r.npy"),
                               "neuron 99 is out of range: the explained output has neurons 0..4", {"x.npy": X20}),
    "neuron_negative": Cli(_analyze("-m", "gradient", "--neuron-selection", "index", "--neuron", "-1", "-o", "r.npy"),
                           "neuron -1 is out of range", {"x.npy": X20}),
    "neuron_beyond_int64": Cli(_analyze("-m", "gradient", "--neuron-selection", "index", "--neuron", str(2 ** 63),
                                        "-o", "r.npy"), f"neuron {2 ** 63} is out of range", {"x.npy": X20}),
    "neuron_out_of_range_occlusion": Cli(_analyze("-m", "occlusion", "--neuron-selection", "index", "--neuron", "10",
                                                  "-o", "r.npy", model=LENET_PATH), "neuron 10 is out of range",
                                         {"x.npy": LENET_X}),
    # 7: an empty batch gives an empty explanation
    "empty_batch": Cli(_analyze("-m", "gradient", "-o", "r.npy"), _check_empty, {"x.npy": np.zeros((0, 20), np.float32)}),
    # 8: small files that would demand a lot of memory
    "constant_folding_bomb": Cli(("compile", "bomb.onnx", "-m", "gradient", "-o", "out.onnx"),
                                 lambda folder, out, err: onnx.checker.check_model(str(folder / "out.onnx")),
                                 {"bomb.onnx": _fold_bomb}),
    "patterns_zip_bomb": Cli(_compile("-m", "pattern.net", "--patterns", "p.npz", model=DIGITS),
                             "these patterns were fitted on another model", {"p.npz": _npz_bomb}),
    "input_header_claims_2_40_floats": Cli(_analyze("-m", "gradient", "-o", "r.npy"), "claims shape [1048576, 1048576]",
                                           {"x.npy": lambda: _npy_header_claiming((1 << 20, 1 << 20))}),
    # 9: what used to be internal errors
    "out_in_unwritable_folder": Cli(("compile", MLP, "-m", "gradient", "-o", "/proc/out.onnx"),
                                    "/proc/out.onnx: cannot write the file"),
    "out_is_a_folder": Cli(("compile", MLP, "-m", "gradient", "-o", "sub"), "sub: is a folder", {"sub/keep": b""}),
    "out_empty_name": Cli(("compile", MLP, "-m", "gradient", "-o", ""), "'': not a file name"),
    "out_name_too_long": Cli(("compile", MLP, "-m", "gradient", "-o", "a" * 300 + ".onnx"), "the file name is too long"),
    "input_npz_truncated": Cli(_analyze("-m", "gradient", "-o", "r.npy", x="x.npz"), "x.npz: not a readable .npy/.npz file",
                               {"x.npz": lambda: _npz_bytes(x=X20)[:200]}),
    "input_npz_forged_member": Cli(_analyze("-m", "gradient", "-o", "r.npy", x="x.npz"), "truncated or forged",
                                   {"x.npz": lambda: _zip({"x.npy": _npy_header_claiming((3, 20))})}),
    "input_npz_object_array": Cli(_analyze("-m", "gradient", "-o", "r.npy", x="x.npz"),
                                  "array 'x' is of type object; only plain numeric arrays are read",
                                  {"x.npz": lambda: _npz_bytes(allow_pickle=True, x=np.array([{"a": 1}] * 3, object))}),
    "input_npy_truncated": Cli(_analyze("-m", "gradient", "-o", "r.npy"), "truncated or forged",
                               {"x.npy": lambda: _npy_bytes(X20)[:-40]}),
    "toml_params_not_a_table": _rules_case('params = 5\n' + EPS_FILE, "params must be a table, got 5"),
    "toml_ops_not_a_list": _rules_case('include = "_lrp_base"\n[[rule]]\nops = 5\nrule = "epsilon"\n',
                                       "rule entry 1: ops must be a list of op types or groups, got 5"),
    "toml_rule_not_a_string": _rules_case('include = "_lrp_base"\n[[rule]]\nops = ["linear"]\nrule = ["epsilon"]\n',
                                          "rule entry 1 names rule ['epsilon']"),
    "toml_entry_name_not_a_string": _rules_case('include = "_lrp_base"\n[[rule]]\nname = 5\nrule = "epsilon"\n',
                                                "name must be a string (a glob), got 5"),
    "toml_position_not_a_string": _rules_case('include = "_lrp_base"\n[[rule]]\nposition = 1\nrule = "flat"\n',
                                              "position must be one of ['first', 'last'], got 1"),
    "toml_epsilon_a_list": _rules_case(EPS_FILE + "[params]\nepsilon = [1, 2]\n",
                                       "parameter 'epsilon' must be a finite number >= 0"),
    "toml_epsilon_a_date": _rules_case(EPS_FILE + "[params]\nepsilon = 1979-05-27\n", "got datetime.date(1979, 5, 27)"),
    "toml_epsilon_a_string": _rules_case(EPS_FILE + '[params]\nepsilon = "small"\n',
                                         "parameter 'epsilon' must be a finite number >= 0 (0: the z-rule with its "
                                         "safe division), got 'small'"),
    "toml_entry_epsilon_a_table": _rules_case('include = "_lrp_base"\n[[rule]]\nops = ["linear"]\nrule = "epsilon"\n'
                                              'epsilon = {a = 1}\n', "rule entry 1: parameter 'epsilon' must be"),
    "toml_custom_param_a_date": _rules_case(EPS_FILE + "[params]\nwhen = 1979-05-27T07:32:00\n",
                                            "parameter 'when' must be a finite number, a string or true/false"),
    "toml_chunk_a_string": _rules_case('kind = "sampling"\nbase = "gradient"\n[sampling]\ninputs = "path"\nreduce = "mean"\n'
                                       '[params]\nsteps = 4\nchunk = "two"\n',
                                       "parameter 'chunk' must be at least 0 (0: all samples at once) and at most "
                                       "65536 (an integer), got 'two'"),
    "toml_seed_negative": _rules_case('kind = "random"\n[params]\nstddev = 1.0\nseed = -1\n', "parameter 'seed' must be"),
    "toml_strict_a_string": _rules_case('strict = "no"\n' + EPS_FILE, "strict must be true or false, got 'no'"),
    "toml_times_input_a_string": _rules_case('times_input = "no"\n' + EPS_FILE, "times_input must be true or false"),
    "toml_ignore_bias_a_string": _rules_case('include = "_lrp_base"\n[[rule]]\nops = ["linear"]\nrule = "epsilon"\n'
                                             'ignore_bias = "no"\n', "parameter 'ignore_bias' must be true or false"),
    "toml_include_a_number": _rules_case("include = 5\n" + EPS_FILE.split("\n", 1)[1], "include must be a string or a list"),
    "toml_required_a_string": _rules_case('required = "low"\n' + EPS_FILE, "required must be a list of strings"),
    "toml_rule_a_number": _rules_case('include = "_lrp_base"\nrule = 5\n', "rule must be a list of tables, got 5"),
    "toml_sampling_a_number": _rules_case('kind = "sampling"\nbase = "gradient"\nsampling = 3\n', "sampling must be a table"),
    "toml_description_a_number": _rules_case("description = 1\n" + EPS_FILE, "description must be a string, got 1"),
    "toml_aliases_a_string": _rules_case('aliases = "e"\n' + EPS_FILE, "aliases must be a list of strings"),
    "seed_negative": Cli(_compile("-m", "smoothgrad", "-p", "seed=-1"), "parameter 'seed' must be an integer from 0"),
    "samples_huge": Cli(_compile("-m", "smoothgrad", "-p", "augment_by_n=100000000"), "parameter 'augment_by_n' must be"),
    "lime_samples_huge": Cli(_analyze("-m", "lime", "-p", "samples=100000000", "-o", "r.npy", model=LENET_PATH),
                             "parameter 'samples' must be", {"x.npy": LENET_X}),
    "occlusion_fill_nan": Cli(_analyze("-m", "occlusion", "-p", "fill=nan", "-o", "r.npy", model=LENET_PATH),
                              "parameter 'fill' must be a finite number", {"x.npy": LENET_X}),
    "bfloat16_model": (lambda: model([h.make_node("Relu", ["x"], ["y"], name="r")], [vi("x", T.BFLOAT16)],
                                     [vi("y", T.BFLOAT16)]), "input 'x' is bfloat16; only float32 models are supported"),
    "weight_data_short": (_short_weight, "initializer 'W' has shape [40, 40] (6400 bytes) but holds 100 bytes"),
    "input_named_neuron": Cli(("compile", "m.onnx", "-m", "gradient", "--neuron-selection", "index", "-o", "out.onnx"),
                              "the model has a tensor named 'neuron'",
                              {"m.onnx": lambda: model([h.make_node("Relu", ["neuron"], ["y"], name="r")], [vi("neuron")],
                                                       [vi("y")])}),
    "node_name_with_newlines": (lambda: model([h.make_node(UNSUPPORTED_OP, ["x"], ["y"], name="two\nlines")], [vi("x")],
                                              [vi("y")]), f"node 'two\\nlines': op {UNSUPPORTED_OP} has no gradient adapter"),
    "runtime_failure_in_analyze": Cli(_analyze("-m", "gradient", "-o", "r.npy", model="m.onnx"),
                                      "ONNX Runtime failed to run the model",
                                      {"m.onnx": _runtime_reshape_failure, "x.npy": np.ones((3, 4), np.float32)}),
    "methods_into_a_closed_pipe": Cli((f"{sys.executable} -m nnxplain methods | true",), _check_quiet, shell=True),
    # 10: include is resolved beside the including file (test_include_is_resolved_beside_the_including_file below)
    "include_not_beside_the_file": Cli(("compile", DIGITS, "--rules", "sub/m.toml", "-o", "out.onnx"),
                                       "include 'part.toml' is neither a file beside it nor a built-in part",
                                       {"sub/m.toml": 'include = "part.toml"\n', "part.toml": EPS_FILE}),
    # 11: a FIFO is refused, never read (it would block); two outputs are written both or neither
    "patterns_fifo": Cli(_compile("-m", "pattern.net", "--patterns", "fifo", model=DIGITS),
                         "fifo: not a patterns file written by `nnxplain fit` (not a regular file)", {"fifo": "FIFO"}),
    "input_fifo": Cli(_analyze("-m", "gradient", "-o", "r.npy", x="fifo"), "fifo: not a readable .npy/.npz file (not a regular file)",
                      {"fifo": "FIFO"}),
    "model_fifo": Cli(("compile", "fifo", "-m", "gradient", "-o", "out.onnx"), "fifo: not a regular file", {"fifo": "FIFO"}),
    "prototype_second_write_fails": Cli(("prototype", DIGITS, "--neuron", "3", "--steps", "2", "-o", "p.png"),
                                        "p.png: is a folder", {"p.png/keep": b""}),
    "evaluate_second_write_fails": Cli(("evaluate", DIGITS, "-m", "gradient", "--data", "x.npy", "--steps", "2",
                                        "-o", "curve"), "curve.csv: is a folder",
                                       {"x.npy": np.random.default_rng(3).random((4, 1, 8, 8), np.float32),
                                        "curve.csv/keep": b""}),
    # issue 14: a plain array as --patterns; NaN inputs are counted and explained as NaN
    "patterns_a_plain_array": Cli(_compile("-m", "pattern.net", "--patterns", "x.npy", model=DIGITS),
                                  "x.npy: not a patterns file written by `nnxplain fit` (a single array",
                                  {"x.npy": np.zeros((2, 1, 8, 8), np.float32)}),
    "nan_in_one_sample": Cli(_analyze("-m", "lrp.epsilon", "-o", "r.npy"), _check_nan_sample, {"x.npy": X20_NAN}),
})


def _npy_bytes(array, allow_pickle=False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _npz_bytes(allow_pickle=False, **arrays) -> bytes:
    return _zip({f"{k}.npy": _npy_bytes(v, allow_pickle) for k, v in arrays.items()})


def _zip(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def _as_cli(name, case) -> Cli:
    if isinstance(case, Cli):
        return case
    make, expected = case  # a model for `nnxplain compile -m gradient`
    check = expected if isinstance(expected, str) else (lambda folder, out, err: expected(folder / "model.onnx"))
    return Cli(("compile", "model.onnx", "-m", "gradient", "-o", "model.explainer.onnx"), check, {"model.onnx": make})


def _make_files(folder, files: dict):
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        content = content() if callable(content) else content
        if isinstance(content, str) and content == "FIFO":
            os.mkfifo(path)
        elif isinstance(content, onnx.ModelProto):
            path.write_bytes(content.SerializeToString())
        elif isinstance(content, np.ndarray):
            np.save(path, content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)


def _run_case(folder, case: Cli):
    command = case.args[0] if case.shell else [sys.executable, "-m", "nnxplain", *case.args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=folder, timeout=TIMEOUT, shell=case.shell)
    except subprocess.TimeoutExpired:
        return None, "", "hang"
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def corpus_runs(tmp_path_factory):
    """Every corpus case through the command line, a few at a time (each with a timeout)."""
    root = tmp_path_factory.mktemp("corpus")
    folders = {}
    for name, case in CORPUS.items():
        folders[name] = root / name
        folders[name].mkdir()
        _make_files(folders[name], _as_cli(name, case).files)
    before = {name: sorted(p.relative_to(folder) for p in folder.rglob("*")) for name, folder in folders.items()}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(_run_case, folders[name], _as_cli(name, case)) for name, case in CORPUS.items()}
        return {name: (folders[name], before[name], *future.result()) for name, future in futures.items()}


def test_the_corpus_covers_both_rounds():
    # round one's list (truncated, not ONNX, empty, unknown domain, ..., fp16, int8) and round two's,
    # item by item; the corpus may grow, so only what it must hold is checked
    assert {"truncated", "empty", "unknown_domain", "cycle", "fp16", "int8_qdq", "zero_size_dims"} <= set(CORPUS)
    assert {"if_captures_input", "random_stddev_zero", "fit_with_nan_rows", "epsilon_nan", "neuron_past_the_end",
            "empty_batch", "constant_folding_bomb", "toml_strict_a_string", "include_not_beside_the_file",
            "patterns_fifo", "patterns_a_plain_array", "nan_in_one_sample"} <= set(CORPUS)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_input_gives_one_clear_error_or_a_correct_result(corpus_runs, name):
    """The command-line contract: a documented failure is exit 2 with exactly one line on stderr,
    `nnxplain: error: ...`, and leaves no file behind; never a traceback, never 'internal error'
    (exit 3, kept for real bugs), never a hang."""
    folder, before, code, stdout, stderr = corpus_runs[name]
    case = _as_cli(name, CORPUS[name])
    assert code is not None, f"{name}: no answer in {TIMEOUT} s"
    assert "Traceback" not in stderr and "internal error" not in stderr and code != 3, stderr
    if isinstance(case.expected, str):
        assert code == 2, (code, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("nnxplain: error: "), stderr
        assert case.expected in lines[0], lines[0]
        after = sorted(p.relative_to(folder) for p in folder.rglob("*"))
        assert after == before, f"files left behind: {sorted(set(after) - set(before))}"
        if not isinstance(CORPUS[name], Cli):
            with pytest.raises(nnxplain.NnxplainError):  # the Python API fails the same way
                nnxplain.compile(folder / "model.onnx", ["gradient"])
    else:
        assert code == 0, stderr
        if not case.shell and case.args[0] == "compile":
            onnx.checker.check_model(onnx.load(str(folder / case.args[-1])), full_check=True)
        case.expected(folder, stdout, stderr)


def test_no_internal_error_over_the_whole_corpus(corpus_runs):
    assert sum(stderr.count("internal error") for *_, stderr in corpus_runs.values()) == 0


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


# ---------------------------------------------------------------------------- round two: the Python API


def test_out_of_range_neurons_are_refused_and_the_graph_answers_nan():
    analyzer = nnxplain.create_analyzer("gradient", LENET, neuron_selection_mode="index")
    x = np.random.default_rng(4).normal(size=(3, 1, 16, 16)).astype(np.float32)
    for neuron in (10, 12, -1, 2 ** 63, [0, 1], 1.5):
        with pytest.raises(nnxplain.NnxplainError, match="out of range|whole numbers|one per sample"):
            analyzer.analyze(x, neuron_selection=neuron)
    # the compiled graph, as production runs it: a sample whose neuron is out of range (or negative,
    # which ONNX's OneHot would count from the end) gets NaN, never zeros that look like an answer
    sess = analyzer.session
    got = sess.run([analyzer.output_name], {"input": x, "neuron": np.array([3, 10, -1], np.int64)})[0]
    assert np.isfinite(got[0]).all() and np.abs(got[0]).max() > 0
    assert np.isnan(got[1]).all() and np.isnan(got[2]).all()
    assert np.array_equal(got[0], analyzer.analyze(x[:1], neuron_selection=3)[0])


ALL_METHODS = sorted(set(nnxplain.methods()) - {"pattern.net", "pattern.attribution"})


@pytest.mark.parametrize("name", ["mobilenet_relu6"])
def test_an_empty_batch_gives_empty_explanations(name):
    """A model with GlobalAveragePool (its gradient divided two sizes that are both 0), and convolutions
    that ONNX Runtime's NCHWc layout reshapes: every method, pattern and perturbation ones included."""
    from nnxplain.perturbation import run as run_perturbation
    from nnxplain.support import stand_in_patterns
    path = ZOO_DIR / f"{name}.onnx"
    x = np.zeros((0, *zoo.MODELS[name][1]), np.float32)
    patterns = stand_in_patterns(onnx.load(str(path)))
    stand_ins = {"low": -1.0, "high": 1.0, "alpha": 2.0}  # for the parameters without a default
    for method in ALL_METHODS + ["pattern.net", "pattern.attribution"]:
        m = load_method(method)
        needs = {k: stand_ins[k] for k in m.required + m.optional[:1]}  # alpha_beta: one of alpha, beta
        analyzer = nnxplain.create_analyzer(method, path, patterns=patterns, **needs)
        assert analyzer.analyze(x).shape == x.shape, method
    for method in ("occlusion", "lime"):
        assert run_perturbation(method, path, x).shape == x.shape, method


# deep_taylor.conservative: z+ at every layer (iNNvestigate's deep_taylor refuses the Sigmoid / Tanh of mlp, conv1d)
DENORMAL_METHODS = ["lrp.z_IB", "lrp.z_plus", "lrp.z_plus_fast", "deep_taylor.conservative", "lrp.alpha_2_beta_1_IB",
                    "lrp.alpha_1_beta_0_IB", "lrp.flat", "lrp.w_square", "lrp.epsilon_IB", "lrp.z", "lrp.epsilon",
                    "epsilon_plus_flat", "lrp.sequential_preset_a_flat"]


@pytest.mark.parametrize("name", ["lenet_bn", "mlp", "conv1d"])
def test_denormal_and_tiny_inputs_give_finite_explanations(name):
    """Inputs scaled to 1e-39 (subnormal float32) used to give NaN / inf: the safe division guarded
    only an exact 0. Each method on a batch of zeros, subnormals, 1e-30 and ordinary inputs."""
    path = ZOO_DIR / f"{name}.onnx"
    base = np.random.default_rng(5).normal(size=(1, *zoo.MODELS[name][1]))
    x = np.concatenate([base * s for s in (0.0, 1e-39, 1e-45, 1e-30, 1.0)]).astype(np.float32)
    assert x[1].any() and not np.isfinite(1 / x[1][x[1] != 0]).all(), "the second sample is subnormal"
    for method in DENORMAL_METHODS:
        relevance = nnxplain.create_analyzer(method, path).analyze(x)
        assert np.isfinite(relevance).all(), method


def test_epsilon_zero_is_the_z_rule_with_its_safe_division():
    x = np.random.default_rng(6).normal(size=(4, 1, 16, 16)).astype(np.float32)
    x[0] = 0
    eps0 = nnxplain.create_analyzer("lrp.epsilon", LENET, epsilon=0).analyze(x)
    z = nnxplain.create_analyzer("lrp.z", LENET).analyze(x)
    assert np.isfinite(eps0).all() and relative_error(eps0, z) < 1e-5


def test_include_is_resolved_beside_the_including_file(tmp_path, monkeypatch):
    """The same method file gives the same explanation wherever it is run: `include` is read beside
    the including file, then among the built-in parts, never from the working directory."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "m.toml").write_text('include = "part.toml"\n')
    (tmp_path / "mine" / "part.toml").write_text(
        'include = "_lrp_base"\n[[rule]]\nops = ["convolution", "linear"]\nrule = "z"\n')
    (tmp_path / "part.toml").write_text(  # a decoy where a working-directory lookup would find it
        'include = "_lrp_base"\n[[rule]]\nops = ["convolution", "linear"]\nrule = "flat"\n')
    x = np.random.default_rng(7).normal(size=(2, 1, 8, 8)).astype(np.float32)
    digits = ZOO_DIR / "digits_cnn.onnx"
    results = []
    for cwd in (tmp_path, tmp_path / "mine"):
        monkeypatch.chdir(cwd)
        results.append(nnxplain.create_analyzer(str(tmp_path / "mine" / "m.toml"), digits).analyze(x))
    assert np.array_equal(results[0], results[1])
    assert relative_error(results[0], nnxplain.create_analyzer("lrp.z", digits).analyze(x)) < 1e-6


def test_onnx_errors_reach_the_python_api_as_nnxplain_errors(monkeypatch):
    """onnx's ValidationError / InferenceError, from wherever in compiling they arise, reach a
    Python caller as NnxplainError (as the command line's one-line error)."""
    from nnxplain import compiler

    def rejecting(*args):
        raise onnx.checker.ValidationError("Nodes in a graph must be topologically sorted\nsecond line")
    monkeypatch.setattr(compiler, "check_float_path", rejecting)
    with pytest.raises(nnxplain.NnxplainError, match="onnx rejects the model: Nodes in a graph must be"):
        nnxplain.compile(LENET, ["gradient"])


def test_exit_3_is_kept_for_bugs_and_asks_for_a_report(monkeypatch, capsys):
    from nnxplain import cli

    def broken(args):
        raise RuntimeError("a bug\nover two lines")
    monkeypatch.setattr(cli, "_methods", broken)
    parser = cli._parser
    monkeypatch.setattr(cli, "_parser", lambda: _with_run(parser(), broken))
    assert cli.main(["methods"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nnxplain: internal error: RuntimeError: a bug\\nover two lines")
    assert "please report it" in err


def _with_run(parser, run):
    parser.set_defaults(run=run)
    for action in parser._subparsers._group_actions:
        for sub in action.choices.values():
            sub.set_defaults(run=run)
    return parser
