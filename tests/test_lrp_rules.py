"""Each LRP rule, on one linear layer, equals a matrix-form numpy reference (float64).

Dense layers (Gemm with either weight layout, MatMul) use their weight matrix directly; a convolution
(any rank, strides, pads, dilations, groups, depthwise) is turned into the same matrix form by an
explicit im2col, so one reference serves every layer. The relevance arriving at the layer is a
random signed vector (the layer's output times a constant, with the gradient rule on that Mul).
Inputs are signed, one sample is all zeros, some inputs are zero, and one output unit is dead
(weights and bias zero, so z = 0 exactly).
"""
import itertools
import subprocess
import sys
import zlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import nnxplain
from nnxplain.methods import parse_method
from nnxplain.runtime import session

from conftest import relative_error

TOL = 1e-5
SAFE_EPS = 1e-7


# ------------------------------------------------------------------------ numpy reference (one sample)

def safe(z):
    return np.where(z == 0, SAFE_EPS, z)


def pos(a):
    return np.where(a > 0, a, 0.0)


def neg(a):
    return np.where(a < 0, a, 0.0)


def reference(rule, x, W, b, R, **p):
    """Relevance at the input of y = x @ W + b for relevance R at its output (x: [n_in], W: [n_in, n_out])."""
    ignore_bias = p.get("ignore_bias", rule == "bounded")
    b = np.zeros_like(b) if ignore_bias else b
    if rule == "z":
        return x * (W @ (R / safe(x @ W + b)))
    if rule == "epsilon":
        z = x @ W + b
        return x * (W @ (R / (z + p["epsilon"] * np.where(z >= 0, 1.0, -1.0))))
    if rule == "gamma":
        Wg, bg = W + p["gamma"] * pos(W), b + p["gamma"] * pos(b)
        return x * (Wg @ (R / safe(x @ Wg + bg)))
    if rule == "alpha_beta":
        xp, xn, Wp, Wn = pos(x), neg(x), pos(W), neg(W)
        split = p.get("bias_split", True)
        bp, bn = (pos(b), neg(b)) if split else (b, b)
        zp = xp @ Wp + xn @ Wn + bp
        zn = xp @ Wn + xn @ Wp + bn
        rp = xp * (Wp @ (R / safe(zp))) + xn * (Wn @ (R / safe(zp)))
        rn = xp * (Wn @ (R / safe(zn))) + xn * (Wp @ (R / safe(zn)))
        return p["alpha"] * rp - p["beta"] * rn
    if rule == "z_plus_fast":
        return x * (pos(W) @ (R / safe(x @ pos(W))))
    if rule in ("w_square", "flat"):
        V = W ** 2 if rule == "w_square" else p["support"]  # flat: 1 wherever an input reaches an output
        return V @ (R / safe(np.ones_like(x) @ V))
    if rule == "bounded":  # low, high: a float, or one per entry of x
        lo, hi = np.broadcast_to(p["low"], x.shape), np.broadcast_to(p["high"], x.shape)
        z = x @ W + b - lo @ pos(W) - hi @ neg(W)
        s = R / safe(z)
        return x * (W @ s) - lo * (pos(W) @ s) - hi * (neg(W) @ s)
    raise KeyError(rule)


def im2col_matrix(in_shape, w, strides, pads, dilations, group):
    """The dense matrix M with conv(x)[flat] = x[flat] @ M for one sample (no bias): one column per
    output (channel, position), holding the weights at the input positions its window reads."""
    cin, *size = in_shape
    cout, cin_g, *k = w.shape
    n = len(size)
    out = [(size[d] + pads[d] + pads[d + n] - dilations[d] * (k[d] - 1) - 1) // strides[d] + 1 for d in range(n)]
    M = np.zeros((cin, *size, cout, *out))
    for oc in range(cout):
        g = oc // (cout // group)
        for o in itertools.product(*map(range, out)):
            for ic in range(cin_g):
                for t in itertools.product(*map(range, k)):
                    i = [o[d] * strides[d] - pads[d] + t[d] * dilations[d] for d in range(n)]
                    if all(0 <= i[d] < size[d] for d in range(n)):
                        M[(g * cin_g + ic, *i, oc, *o)] += w[(oc, ic, *t)]
    return M.reshape(int(np.prod(in_shape)), -1), out


# ------------------------------------------------------------------------ layers as ONNX models

def layer_model(kind, rng, relu_first=False):
    """(onnx model, x, dense matrix W [n_in, n_out], bias per output unit, output shape per sample).
    With relu_first the layer reads Relu(input), so rules see an input known to be >= 0."""
    def model(node, x_shape, y_shape, inits):
        scale = rng.standard_normal(y_shape).astype(np.float32)
        nodes = [node, helper.make_node("Mul", ["y", "scale"], ["out"], name="to_relevance")]
        if relu_first:
            node.input[0] = "relu_out"
            nodes.insert(0, helper.make_node("Relu", ["input"], ["relu_out"], name="relu"))
        graph = helper.make_graph(
            nodes, kind, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *x_shape])],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", *y_shape])],
            [onnx.numpy_helper.from_array(v, k) for k, v in {**inits, "scale": scale}.items()])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), scale

    def dead_unit(w, b, axis):
        idx = [slice(None)] * w.ndim
        idx[axis] = 1
        w[tuple(idx)] = 0
        b[1] = 0

    if kind in ("gemm", "gemm_transB", "matmul"):
        n_in, n_out = 7, 6
        w = rng.standard_normal((n_in, n_out)).astype(np.float32)
        b = rng.standard_normal(n_out).astype(np.float32) * 0.5
        dead_unit(w, b, 1)
        if kind == "matmul":
            b[:] = 0
            node = helper.make_node("MatMul", ["input", "W"], ["y"], name="layer")
            proto, scale = model(node, [n_in], [n_out], {"W": w})
        elif kind == "gemm_transB":
            node = helper.make_node("Gemm", ["input", "W", "b"], ["y"], name="layer", transB=1)
            proto, scale = model(node, [n_in], [n_out], {"W": np.ascontiguousarray(w.T), "b": b})
        else:
            node = helper.make_node("Gemm", ["input", "W", "b"], ["y"], name="layer")
            proto, scale = model(node, [n_in], [n_out], {"W": w, "b": b})
        return proto, (n_in,), w.astype(np.float64), b.astype(np.float64), scale, np.ones((n_in, n_out))
    conv = {  # in_shape, cout, kernel, strides, pads, dilations, group
        "conv2d": ((3, 7, 6), 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        "conv2d_strided": ((3, 8, 7), 4, (3, 2), (2, 2), (1, 0, 1, 1), (1, 1), 1),
        "conv2d_dilated_grouped": ((4, 8, 8), 6, (3, 3), (1, 2), (2, 1, 2, 1), (2, 1), 2),
        "depthwise": ((4, 6, 6), 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4),
        "conv1d": ((3, 11), 5, (3,), (2,), (1, 1), (1,), 1),
        "conv3d": ((2, 4, 5, 4), 3, (2, 3, 2), (1, 1, 2), (0, 1, 0, 1, 1, 1), (1, 1, 1), 1),
    }[kind]
    in_shape, cout, k, strides, pads, dilations, group = conv
    w = rng.standard_normal((cout, in_shape[0] // group, *k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32) * 0.5
    dead_unit(w, b, 0)
    M, out = im2col_matrix(in_shape, w.astype(np.float64), strides, pads, dilations, group)
    support, _ = im2col_matrix(in_shape, np.ones(w.shape), strides, pads, dilations, group)
    node = helper.make_node("Conv", ["input", "W", "b"], ["y"], name="layer", kernel_shape=list(k),
                            strides=list(strides), pads=list(pads), dilations=list(dilations), group=group)
    proto, scale = model(node, list(in_shape), [cout, *out], {"W": w, "b": b})
    bias = np.repeat(b.astype(np.float64), int(np.prod(out)))
    return proto, in_shape, M, bias, scale, support


LAYERS = ["gemm", "gemm_transB", "matmul", "conv2d", "conv2d_strided", "conv2d_dilated_grouped", "depthwise",
          "conv1d", "conv3d"]
RULE_CASES = [
    ("z", {}), ("z", {"ignore_bias": True}),
    ("epsilon", {"epsilon": 0.1}), ("epsilon", {"epsilon": 0.1, "ignore_bias": True}),
    ("gamma", {"gamma": 0.25}), ("gamma", {"gamma": 1.0, "ignore_bias": True}),
    ("alpha_beta", {"alpha": 2.0, "beta": 1.0}), ("alpha_beta", {"alpha": 2.0, "beta": 1.0, "bias_split": False}),
    ("alpha_beta", {"alpha": 1.0, "beta": 0.0}), ("alpha_beta", {"alpha": 3.0, "beta": 2.0, "ignore_bias": True}),
    ("z_plus_fast", {}), ("w_square", {}), ("flat", {}),
    ("bounded", {"low": -2.0, "high": 2.5}), ("bounded", {"low": -2.0, "high": 2.5, "ignore_bias": False}),
]


def inputs(rng, in_shape, batch=5):
    x = rng.standard_normal((batch, *in_shape)).astype(np.float32)
    x[0] = 0  # an all-zero sample
    x[1].reshape(-1)[::3] = 0  # zero entries
    return x


@pytest.mark.parametrize("rule, params", RULE_CASES, ids=[f"{r}-{'-'.join(f'{k}={v}' for k, v in p.items())}"
                                                          for r, p in RULE_CASES])
@pytest.mark.parametrize("kind", LAYERS)
def test_rule_equals_matrix_reference(kind, rule, params):
    rng = np.random.default_rng(zlib.crc32(f"{kind}/{rule}".encode()))
    proto, in_shape, W, b, scale, support = layer_model(kind, rng)
    method = parse_method({"start": "one", "rule": [{"ops": ["Conv", "Gemm", "MatMul"], "rule": rule, **params}]},
                          "test_rule")
    model = nnxplain.compile(proto, [method], neuron_selection="all")
    x = inputs(rng, in_shape)
    got = session(model).run(["test_rule"], {"input": x})[0]
    assert got.shape == x.shape and np.isfinite(got).all()
    R = np.broadcast_to(scale.astype(np.float64).reshape(-1), (len(x), scale.size))  # d(sum(y * scale))/dy

    def ref(x, W, b):
        return np.stack([reference(rule, xi.reshape(-1), W, b, Ri, support=support, **params)
                         for xi, Ri in zip(x, R)]).reshape(x.shape)

    want = ref(x.astype(np.float64), W, b)
    assert relative_error(got, want) < TOL + float32_sensitivity(ref, x, W, b, want)


def float32_sensitivity(ref, x, W, b, want, trials=3):
    """How far the exact result moves when x, W and b move by float32 rounding (relative 2^-24), as a
    fraction of max |want|. LRP-z divides by z: where some z is near 0 its float32 result is only as
    good as z's rounding, and that is a property of the data, not of the implementation."""
    rng = np.random.default_rng(0)
    wobble = lambda a: a * (1 + 2.0 ** -24 * rng.standard_normal(a.shape))
    moved = max(np.abs(ref(wobble(x.astype(np.float64)), wobble(W), wobble(b)) - want).max() for _ in range(trials))
    return 10 * moved / max(np.abs(want).max(), 1e-30)


@pytest.mark.parametrize("rule, params", [("z", {}), ("epsilon", {"epsilon": 1e-7}), ("alpha_beta", {"alpha": 2.0}),
                                          ("w_square", {}), ("flat", {}), ("gamma", {})])
def test_conserving_rules_conserve_on_a_bias_free_layer(rule, params):
    """Without a bias every rule but epsilon distributes exactly the relevance it receives."""
    rng = np.random.default_rng(3)
    proto, in_shape, W, b, scale, _ = layer_model("conv2d", rng)
    method = parse_method({"start": "one", "rule": [{"ops": ["Conv"], "rule": rule, "ignore_bias": True, **params}
                                                    if rule not in ("w_square", "flat") else
                                                    {"ops": ["Conv"], "rule": rule}]}, "test_rule")
    x = np.abs(inputs(rng, in_shape))[1:]  # positive inputs: every unit's z is away from zero
    got = session(nnxplain.compile(proto, [method], neuron_selection="all")).run(["test_rule"], {"input": x})[0]
    live = np.ones(scale.shape)
    if rule != "flat":
        live[1] = 0  # output channel 1 has no weights: its relevance has nowhere to go (flat ignores weights)
    expected = (scale.astype(np.float64) * live).sum()
    got = got.reshape(len(x), -1).astype(np.float64)
    # relative to the total absolute relevance: the sum of large terms of both signs is exact only to float32
    error = np.abs(got.sum(1) - expected) / np.maximum(np.abs(got).sum(1), abs(expected))
    assert error.max() < TOL


def test_epsilon_stabilizer_treats_sign_of_zero_as_positive():
    """An all-zero input: z = b, and the dead unit's z = 0 is stabilized by +epsilon, not divided by zero."""
    rng = np.random.default_rng(1)
    proto, in_shape, W, b, scale, _ = layer_model("gemm", rng)
    method = parse_method({"start": "one", "rule": [{"ops": ["Gemm"], "rule": "epsilon", "epsilon": 0.5}]}, "t")
    x = np.zeros((1, *in_shape), np.float32)
    got = session(nnxplain.compile(proto, [method], neuron_selection="all")).run(["t"], {"input": x})[0]
    assert np.array_equal(got, np.zeros_like(x))  # x = 0: all relevance goes to the bias / stabilizer, no NaN


def test_alpha_beta_needs_alpha_minus_beta_one():
    rng = np.random.default_rng(1)
    proto, *_ = layer_model("gemm", rng)
    method = parse_method({"start": "one", "rule": [{"ops": ["Gemm"], "rule": "alpha_beta", "alpha": 2.0,
                                                     "beta": 2.0}]}, "t")
    # refused when the method is resolved, before any node is looked at: the entry is named
    with pytest.raises(nnxplain.NnxplainError, match=r"method 't' \(t entry 1\): rule 'alpha_beta' needs alpha - beta = 1"):
        nnxplain.compile(proto, [method], neuron_selection="all")


@pytest.mark.parametrize("params", [{"alpha": 2.0, "beta": 1.0}, {"alpha": 2.0, "beta": 1.0, "bias_split": False},
                                    {"alpha": 3.0, "beta": 2.0, "ignore_bias": True}, {"alpha": 1.0, "beta": 0.0}],
                         ids=["split", "innvestigate-bias", "ignore-bias", "alpha1-beta0"])
@pytest.mark.parametrize("kind", ["gemm_transB", "matmul", "conv2d_strided", "depthwise"])
def test_alpha_beta_after_relu_equals_matrix_reference(kind, params):
    """After a ReLU the input is known to be >= 0: alpha-beta then takes its negative pre-activation
    from the layer's own output and transposes both shares in one pass; the result must not change."""
    rng = np.random.default_rng(zlib.crc32(kind.encode()))
    proto, in_shape, W, b, scale, support = layer_model(kind, rng, relu_first=True)
    method = parse_method({"start": "one", "rule": [{"ops": ["Conv", "Gemm", "MatMul"], "rule": "alpha_beta",
                                                     **params}]}, "test_rule")
    model = nnxplain.compile(proto, [method], neuron_selection="all")
    passes = sum(n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") for n in model.graph.node)
    # forward, x W+, and the transposes of both shares as one (a grouped Conv: one per share)
    assert passes == 1 + 1 + (2 if params["beta"] and kind == "depthwise" else 1)
    x = inputs(rng, in_shape)
    got = session(model).run(["test_rule"], {"input": x})[0]
    R = np.broadcast_to(scale.astype(np.float64).reshape(-1), (len(x), scale.size))
    relu = np.maximum(x.astype(np.float64), 0)

    def ref(x, W, b):
        return np.stack([reference("alpha_beta", xi.reshape(-1), W, b, Ri, **params) for xi, Ri in zip(x, R)]
                        ).reshape(x.shape) * (x > 0)  # the ReLU passes relevance only where it is open... and
    want = ref(relu, W, b)  # ...x * c is 0 where relu(x) = 0 anyway
    assert relative_error(got, want) < TOL + float32_sensitivity(ref, relu, W, b, want)


# ------------------------------------------------------------------------ z^B with per-channel bounds

def per_entry(values, in_shape):
    """One value per input channel (axis 0 of a sample; a dense layer's features), as one per entry."""
    return np.broadcast_to(np.reshape(values, (-1,) + (1,) * (len(in_shape) - 1)), in_shape).reshape(-1)


@pytest.mark.parametrize("ignore_bias", [True, False])
@pytest.mark.parametrize("kind", LAYERS)
def test_bounded_with_per_channel_bounds_equals_matrix_reference(kind, ignore_bias):
    """z^B for inputs bounded per channel (e.g. an image normalized with per-channel mean and std):
    low and high are lists, one value per input channel."""
    rng = np.random.default_rng(zlib.crc32(f"{kind}/bounded_per_channel".encode()))
    proto, in_shape, W, b, scale, _ = layer_model(kind, rng)
    low = rng.uniform(-3.0, -1.0, in_shape[0]).round(3).tolist()
    high = rng.uniform(1.0, 3.0, in_shape[0]).round(3).tolist()
    method = parse_method({"start": "one", "rule": [{"ops": ["Conv", "Gemm", "MatMul"], "rule": "bounded",
                                                     "low": low, "high": high, "ignore_bias": ignore_bias}]}, "t")
    x = inputs(rng, in_shape)
    got = session(nnxplain.compile(proto, [method], neuron_selection="all")).run(["t"], {"input": x})[0]
    R = np.broadcast_to(scale.astype(np.float64).reshape(-1), (len(x), scale.size))
    bounds = {"low": per_entry(low, in_shape), "high": per_entry(high, in_shape), "ignore_bias": ignore_bias}

    def ref(x, W, b):
        return np.stack([reference("bounded", xi.reshape(-1), W, b, Ri, **bounds) for xi, Ri in zip(x, R)]
                        ).reshape(x.shape)
    want = ref(x.astype(np.float64), W, b)
    assert relative_error(got, want) < TOL + float32_sensitivity(ref, x, W, b, want)


def test_per_channel_bounds_of_the_wrong_length_name_the_node_and_parameter():
    proto, *_ = layer_model("conv2d", np.random.default_rng(0))  # 3 input channels
    method = parse_method({"start": "one", "rule": [{"ops": ["Conv"], "rule": "bounded", "low": [-1.0, -2.0],
                                                     "high": 1.0}]}, "t")
    with pytest.raises(nnxplain.NnxplainError, match="node 'layer'.*low has 2 values .* layer has 3 input channels"):
        nnxplain.compile(proto, [method], neuron_selection="all")


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nnxplain", *args], capture_output=True, text=True, cwd=cwd)


def test_list_parameters_on_the_command_line(tmp_path):
    """`--param low=[-2.1,-1.9,-1.8]` is a list of three floats (one per input channel), the same as
    low=[...] given in Python; a single float is broadcast over the channels."""
    proto, in_shape, *_ = layer_model("conv2d", np.random.default_rng(4))
    onnx.save(proto, tmp_path / "layer.onnx")
    low, high = [-2.1, -1.9, -1.8], [2.2, 2.4, 2.6]
    done = cli("compile", "layer.onnx", "-m", "deep_taylor.bounded", "--param", "low=[-2.1,-1.9,-1.8]",
               "--param", "high=[2.2, 2.4, 2.6]", "-o", "cli.onnx", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    x = inputs(np.random.default_rng(5), in_shape)
    run = lambda model: session(model).run(["deep_taylor.bounded"], {"input": x})[0]
    by_cli = run(onnx.load(tmp_path / "cli.onnx"))
    assert np.array_equal(by_cli, run(nnxplain.compile(proto, ["deep_taylor.bounded"], params={"low": low, "high": high})))
    # a float is the same for every channel
    assert np.array_equal(run(nnxplain.compile(proto, ["deep_taylor.bounded"], params={"low": -2.0, "high": 2.0})),
                          run(nnxplain.compile(proto, ["deep_taylor.bounded"], params={"low": [-2.0] * 3,
                                                                                       "high": [2.0] * 3})))


@pytest.mark.parametrize("value, wants", [
    ("abc", "must be a finite number, or a list of them"),
    ("[-2.1,x]", "must be a finite number, or a list of them"),
    ("[]", "must be a finite number, or a list of them"),
    ("[-2,nan,1]", "must be a finite number, or a list of them"),
])
def test_a_wrong_list_parameter_is_one_line_naming_method_rule_and_parameter(tmp_path, value, wants):
    proto, *_ = layer_model("conv2d", np.random.default_rng(4))
    onnx.save(proto, tmp_path / "layer.onnx")
    done = cli("compile", "layer.onnx", "-m", "deep_taylor.bounded", "--param", f"low={value}", "--param", "high=2",
               "-o", "out.onnx", cwd=tmp_path)
    assert done.returncode == 2 and not (tmp_path / "out.onnx").exists()
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith(
        "nnxplain: error: method 'deep_taylor.bounded' (rule 'bounded'): parameter 'low' " + wants), line


# ------------------------------------------------------------------------ the rule registry

def test_every_rule_declares_the_parameters_its_function_takes():
    """A rule's function takes exactly e, node, the relevance, its declared parameters and its needs."""
    import inspect
    from nnxplain.propagation import RULES
    for name, rule in RULES.items():
        taken = [p.name for p in inspect.signature(rule.fn).parameters.values()
                 if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in ("e", "node", "dy"))]
        assert sorted(taken) == sorted([*rule.params, *rule.needs]), name


def scaled_z(e, node, dy, share, zero_where_zero):
    """A test rule: `share` times the z-rule's relevance (a required parameter)."""
    from nnxplain import lrp
    return [None if r is None else e.Mul(r, share) for r in lrp.lrp_z(e, node, dy, False, zero_where_zero)]


def register_scaled_z(monkeypatch, times_input):
    from nnxplain.params import number
    from nnxplain.rule_registry import RULES, Rule
    monkeypatch.setitem(RULES, "scaled_z", Rule(scaled_z, frozenset({"Conv", "Gemm"}), "test", {"share": number()},
                                                ("zero_where_zero",), times_input))


def test_a_rule_can_have_a_required_parameter(monkeypatch):
    register_scaled_z(monkeypatch, times_input=True)
    proto, in_shape, *_ = layer_model("gemm", np.random.default_rng(2))
    entry = {"ops": ["Gemm"], "rule": "scaled_z"}
    with pytest.raises(nnxplain.NnxplainError, match=r"method 't' \(t entry 1\): rule 'scaled_z' needs parameter 'share'"):
        nnxplain.compile(proto, [parse_method({"start": "one", "rule": [entry]}, "t")], neuron_selection="all")
    x = inputs(np.random.default_rng(3), in_shape)
    run = lambda rule_entry: session(nnxplain.compile(proto, [parse_method({"start": "one", "rule": [rule_entry]}, "t")],
                                                      neuron_selection="all")).run(["t"], {"input": x})[0]
    assert np.allclose(run({**entry, "share": 0.5}), 0.5 * run({"ops": ["Gemm"], "rule": "z"}), rtol=1e-6, atol=0)
    with pytest.raises(nnxplain.NnxplainError, match=r"t: rule entry 1: parameter 'share' must be a finite number"):
        parse_method({"start": "one", "rule": [{**entry, "share": "half"}]}, "t")


@pytest.mark.parametrize("times_input", [True, False])
def test_the_conv_relu_shortcut_follows_the_declared_times_input(monkeypatch, times_input):
    """A rule declared times_input (its relevance is x times something) lets the compiler read each
    linear layer's output off its ReLU, so ONNX Runtime fuses Conv + Relu; undeclared, it does not."""
    from conftest import ZOO_DIR
    register_scaled_z(monkeypatch, times_input)
    method = parse_method({"include": "_lrp_base", "params": {"share": 1.0},
                           "rule": [{"ops": ["convolution", "linear"], "rule": "scaled_z"}]}, "t")
    model = nnxplain.compile(ZOO_DIR / "digits_cnn.onnx", [method])
    readers = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n.op_type)
    convs = [n for n in model.graph.node if n.op_type == "Conv" and not n.name.startswith(("nnx/", "t/"))]  # the model's
    only_relu = [c for c in convs if readers[c.output[0]] == ["Relu"]]
    assert len(only_relu) == (len(convs) if times_input else 0) and convs


def module_imports():
    """{module: the nnxplain modules it imports at module level}, for every module of the package,
    subpackages included ('ops.conv', 'rewrites.fold_batchnorm'; a package by its own name, '' for
    nnxplain itself). Importing 'ops.conv' imports the package 'ops' first, so both count."""
    import ast
    from pathlib import Path
    package = Path(nnxplain.__file__).parent
    modules = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        here = [p for p in name.split(".") if p]
        if path.name != "__init__.py":
            here = here[:-1]  # the package the module is in
        imported = set()
        for node in ast.parse(path.read_text()).body:  # module level only: imports inside functions are lazy
            if not (isinstance(node, ast.ImportFrom) and node.level >= 1):
                continue
            target = here[:len(here) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            found = [".".join(target + [a.name]) for a in node.names] + [".".join(target)]
            for module in found:
                parts = module.split(".")
                imported |= {".".join(parts[:k]) for k in range(1, len(parts) + 1)} & set(modules)
        graph[name] = imported - {name, ""}
    return graph


def test_no_module_of_nnxplain_imports_itself_through_a_cycle():
    """Module-level imports form no cycle anywhere in the package (lrp and propagation, evaluate and
    perturbation, the op records and their users): each module can be read after what it imports."""
    graph = module_imports()

    def cycle_from(start):
        stack, seen = [(start, (start,))], set()
        while stack:
            module, path = stack.pop()
            for nxt in graph.get(module, ()):
                if nxt == start:
                    return path + (start,)
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + (nxt,)))
        return None
    assert len(graph) > 60  # every module was read
    cycles = [" -> ".join(c) for c in map(cycle_from, sorted(graph)) if c]
    assert not cycles, cycles[0]


def test_parameters_are_scoped_by_method_name_up_to_the_last_dot():
    """`key` goes to every method that has it, `method.key` to that method only (and wins over `key`);
    `deep_taylor.bounded.low` belongs to deep_taylor.bounded, not to deep_taylor."""
    from nnxplain.params import scoped
    given = {"low": -1.0, "deep_taylor.bounded.low": -2.0, "deep_taylor.bounded.high": 2.0, "deep_taylor.typo": 0}
    assert scoped(given, "deep_taylor.bounded", ["low", "high"]) == {"low": -2.0, "high": 2.0}
    assert scoped(given, "deep_taylor", []) == {"typo": 0}  # its error to report: no parameter 'typo'
    assert scoped(given, "lrp.epsilon", ["epsilon"]) == {}
