"""The LRP / Deep Taylor methods (rules/*.toml) on the zoo: what each preset maps where, conservation,
LRP-z = input x gradient on ReLU networks, no NaN / Inf, parameters, and the errors a method file gives."""
import subprocess
import sys

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
import torch
from onnx import TensorProto, helper

import nnxplain
from models import zoo
from nnxplain.canonicalize import canonicalize
from nnxplain.load import load
from nnxplain.methods import load_method, parse_method, positions
from nnxplain.runtime import session

from conftest import ZOO_DIR, lrp_methods, relative_error, required_params

TOL = 1e-5
LRP_METHODS = lrp_methods()
NEEDS = {m: required_params(m) for m in LRP_METHODS}
RELU_MODELS = ["digits_cnn", "lenet_bn", "resnet", "concat_cnn"]  # piecewise-linear: ReLU, max / average pooling


def zoo_batch(name, batch=6, seed=5):
    torch.manual_seed(seed)
    return torch.randn(batch, *zoo.MODELS[name][1]).numpy()


def run(path, method, x, **params):
    model = nnxplain.compile(path, [method], params={**NEEDS.get(method, {}), **params})
    logits, relevance = session(model).run(None, {"input": x})
    return logits, relevance


def input_times_gradient(name, x):
    net = zoo.twin(name)
    xt = torch.from_numpy(x).requires_grad_(True)
    y = net(xt)
    y.gather(1, y.argmax(1, keepdim=True)).sum().backward()
    return (xt.grad * xt).detach().numpy()


# ------------------------------------------------------------------ every method on every zoo model

# iNNvestigate's Deep Taylor refuses activations other than ReLU (mlp: LeakyReLU, Sigmoid; conv1d: Tanh)
REFUSED = {(m, n) for m in ("deep_taylor", "deep_taylor.bounded") for n in ("mlp", "conv1d")}


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_every_lrp_method_runs_finite_on_random_and_all_zero_input(name):
    path = ZOO_DIR / f"{name}.onnx"
    x = zoo_batch(name)
    zeros = np.zeros_like(x)
    for method in LRP_METHODS:
        if (method, name) in REFUSED:
            with pytest.raises(nnxplain.NnxplainError, match="Deep Taylor supports ReLU activations only"):
                run(path, method, x)
            continue
        for batch in (x, zeros):
            logits, r = run(path, method, batch)
            assert r.shape == batch.shape and np.isfinite(r).all(), f"{method} on {name}"


def dead_layer_model():
    """Gemm -> Relu -> Gemm whose hidden units are all dead (bias -100)."""
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((5, 8)).astype(np.float32), rng.standard_normal((8, 3)).astype(np.float32)
    inits = {"w1": w1, "b1": np.full(8, -100, np.float32), "w2": w2, "b2": np.array([0.5, -0.2, 0.1], np.float32)}
    nodes = [helper.make_node("Gemm", ["input", "w1", "b1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["a"], name="relu"),
             helper.make_node("Gemm", ["a", "w2", "b2"], ["logits"], name="fc2")]
    graph = helper.make_graph(nodes, "dead", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 5])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
                              [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_no_nan_when_a_whole_layer_is_dead():
    proto = dead_layer_model()
    x = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    for method in LRP_METHODS:
        model = nnxplain.compile(proto, [method], params=NEEDS.get(method, {}))
        r = session(model).run([method], {"input": x})[0]
        assert np.isfinite(r).all(), method
        if method not in ("lrp.w_square", "lrp.flat", "lrp.sequential_preset_a_flat", "lrp.sequential_preset_b_flat",
                          "epsilon_plus_flat", "epsilon_alpha2_beta1_flat"):
            assert np.abs(r).max() == 0, f"{method}: dead units pass no relevance to the input"


# ------------------------------------------------------------------ LRP-z and input x gradient

@pytest.mark.parametrize("name", RELU_MODELS)
def test_lrp_z_equals_input_times_gradient_on_relu_networks(name):
    """With the bias in z, LRP-z on a ReLU network (max and average pooling included) is input x gradient."""
    x = zoo_batch(name)
    _, r = run(ZOO_DIR / f"{name}.onnx", "lrp.z", x)
    assert relative_error(r, input_times_gradient(name, x)) < TOL


def test_lrp_z_IB_equals_lrp_z_and_input_times_gradient_without_bias(tmp_path):
    """On a ReLU network without biases, ignoring the bias changes nothing."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, bias=False), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 5, bias=False)).eval()
    path = tmp_path / "nobias.onnx"
    torch.onnx.export(net, (torch.randn(1, 2, 8, 8),), str(path), dynamo=False, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}})
    x = torch.randn(5, 2, 8, 8)
    xg = x.clone().requires_grad_(True)
    y = net(xg)
    y.gather(1, y.argmax(1, keepdim=True)).sum().backward()
    expected = (xg.grad * x).numpy()
    for method in ("lrp.z", "lrp.z_IB", "lrp.epsilon_IB"):
        _, r = run(path, method, x.numpy())
        assert relative_error(r, expected) < TOL, method


# ------------------------------------------------------------------ conservation

CONSERVING = {  # method -> zoo models on which it conserves (see README, "LRP rules": where relevance leaks)
    "lrp.z_plus": ["mlp", "lenet_bn", "resnet", "digits_cnn"],
    "lrp.alpha_1_beta_0_IB": ["mlp", "lenet_bn", "resnet", "digits_cnn"],
    "deep_taylor.conservative": ["mlp", "lenet_bn", "resnet", "digits_cnn"],
    "deep_taylor.bounded.conservative": ["mlp", "lenet_bn", "resnet", "concat_cnn", "digits_cnn"],
    # iNNvestigate's Deep Taylor conserves only where no average pooling or Add lies on the way back
    "deep_taylor": ["lenet_bn", "digits_cnn"],
    "deep_taylor.bounded": ["lenet_bn", "digits_cnn"],
    "lrp.w_square": ["mlp", "lenet_bn", "conv1d", "digits_cnn"],
    "lrp.flat": ["mlp", "lenet_bn", "conv1d", "digits_cnn"],
    "lrp.z_IB": ["lenet_bn", "concat_cnn", "digits_cnn"],
    "lrp.z_plus_fast": ["lenet_bn", "resnet", "concat_cnn", "conv1d"],
}


def conservation_error(name, method):
    x = zoo_batch(name, batch=8)
    y, r = run(ZOO_DIR / f"{name}.onnx", method, x)
    selected = y.max(1).astype(np.float64)
    if load_method(method).start == "positive_value":
        selected = np.maximum(selected, 0)  # Deep Taylor explains the output after a ReLU
    return float((np.abs(r.reshape(len(x), -1).astype(np.float64).sum(1) - selected) / np.abs(selected)).max())


@pytest.mark.parametrize("method, name", [(m, n) for m, names in CONSERVING.items() for n in names])
def test_relevance_sum_equals_selected_output(method, name):
    assert conservation_error(name, method) < TOL


# ------------------------------------------------------------------ what each preset maps where

def rules_by_node(name, method, **params):
    graph = gs.import_onnx(canonicalize(load(ZOO_DIR / f"{name}.onnx")))
    m = load_method(method).with_params({**NEEDS.get(method, {}), **params})
    where = positions(graph, graph.inputs, graph.outputs[0])
    return {n.name: m.rule_for(n, where) for n in graph.nodes}


def test_first_position_is_every_linear_layer_reached_from_the_input():
    rules = rules_by_node("concat_cnn", "lrp.sequential_preset_a_flat")
    flat = sorted(n for n, (rule, _, _) in rules.items() if rule == "flat")
    assert flat == ["/b1/Conv", "/b3/Conv", "/b5/Conv", "/bpool/bpool.1/Conv"]  # the avg-pool branch too
    assert rules["/dense_conv/Conv"][0] == "alpha_beta" and rules["/fc/Gemm"][0] == "epsilon"


def test_presets_map_rules_and_parameters_like_innvestigate():
    a = rules_by_node("digits_cnn", "lrp.sequential_preset_a")
    assert a["/net/net.0/Conv"][0] == "alpha_beta" and a["/net/net.0/Conv"][2]["alpha"] == 1.0
    assert a["/net/net.6/Gemm"][0] == "epsilon" and a["/net/net.6/Gemm"][2] == {"epsilon": 0.1}
    assert a["/net/net.1/Relu"][0] == "pass" and a["/net/net.4/MaxPool"][0] == "gradient"
    b = rules_by_node("digits_cnn", "lrp.sequential_preset_b_flat")
    assert b["/net/net.0/Conv"][0] == "flat" and b["/net/net.2/Conv"][2]["alpha"] == 2.0
    box = rules_by_node("digits_cnn", "epsilon_gamma_box", low=-1.5, high=2.0)
    assert box["/net/net.0/Conv"][0] == "bounded" and box["/net/net.0/Conv"][2] == {"low": -1.5, "high": 2.0}
    assert box["/net/net.2/Conv"][2] == {"gamma": 0.25} and box["/net/net.8/Gemm"][2] == {"epsilon": 1e-6}


def test_deep_taylor_explains_the_positive_part_of_the_output():
    """iNNvestigate puts a ReLU on the output: a negative selected score gives zero relevance."""
    proto = dead_layer_model()  # all hidden units dead: the output is the bias, one entry negative
    model = nnxplain.compile(proto, ["deep_taylor"], neuron_selection="index")
    x = np.zeros((1, 5), np.float32)
    r = session(model).run(["deep_taylor"], {"input": x, "neuron": np.array([1], np.int64)})[0]
    assert np.array_equal(r, np.zeros_like(x))


# ------------------------------------------------------------------ parameters

def test_param_override_reaches_every_epsilon_rule():
    x = zoo_batch("digits_cnn")
    path = ZOO_DIR / "digits_cnn.onnx"
    by_param = run(path, "lrp.epsilon", x, epsilon=0.5)[1]
    by_file = session(nnxplain.compile(path, [parse_method({"include": "_lrp_base", "rule": [
        {"ops": ["convolution", "linear"], "rule": "epsilon", "epsilon": 0.5}]}, "e")])).run(["e"], {"input": x})[0]
    default = run(path, "lrp.epsilon", x)[1]
    assert np.array_equal(by_param, by_file) and relative_error(by_param, default) > 1e-2
    analyzer = nnxplain.create_analyzer("lrp.epsilon", str(path), epsilon=0.5)
    assert np.array_equal(analyzer.analyze(x), by_param)


def test_alpha_beta_infers_the_missing_parameter():
    x = zoo_batch("digits_cnn")
    path = ZOO_DIR / "digits_cnn.onnx"

    def alpha_beta(**params):
        return session(nnxplain.compile(path, ["lrp.alpha_beta"], params=params)).run(["lrp.alpha_beta"], {"input": x})[0]

    both = alpha_beta(alpha=3.0, beta=2.0)
    assert np.array_equal(alpha_beta(alpha=3.0), both) and np.array_equal(alpha_beta(beta=2.0), both)
    assert np.array_equal(alpha_beta(alpha=2.0), run(path, "lrp.alpha_2_beta_1", x)[1])


@pytest.mark.parametrize("method, params, message", [
    ("deep_taylor.bounded", {}, "method 'deep_taylor.bounded' needs parameter 'low'"),
    ("lrp.alpha_beta", {}, r"rule 'alpha_beta' needs alpha or beta"),
    ("lrp.alpha_beta", {"alpha": 2.0, "beta": 2.0}, r"alpha - beta = 1"),
    ("lrp.epsilon", {"gamma": 0.3}, "parameter 'gamma' belongs to none of the methods"),
    ("lrp.epsilon", {"epsilon": "big"}, "parameter 'epsilon' expects float, got 'big'"),
])
def test_parameter_errors_name_what_is_wrong(method, params, message):
    with pytest.raises(nnxplain.NnxplainError, match=message):
        nnxplain.compile(ZOO_DIR / "digits_cnn.onnx", [method], params=params)


# ------------------------------------------------------------------ method files: errors and CLI

def compile_file(tmp_path, text, model="digits_cnn"):
    path = tmp_path / "my_method.toml"
    path.write_text(text)
    return nnxplain.compile(ZOO_DIR / f"{model}.onnx", [str(path)])


@pytest.mark.parametrize("text, message", [
    ('include = "_lrp_base"\n[[rule]]\nname = "/nonet/*"\nrule = "flat"\n',
     r"entry 1 \(name '/nonet/\*'\) matches no node of the model"),
    ('include = "lrp.epsilon"\n[[rule]]\nops = ["MaxPool"]\nrule = "epsilon"\n',
     r"rule 'epsilon' .* matched node '/net/net.4/MaxPool' \(op MaxPool\) but applies only to"),
    ('strict = true\n[[rule]]\nops = ["convolution", "linear"]\nrule = "z"\n',
     r"node '/net/net.7/Relu' \(op Relu\) is matched by no rule entry \(expected one of: ops Conv/ConvTranspose/Gemm/MatMul\)"),
    ('include = "_lrp_base"\n[[rule]]\nops = ["linear"]\nrule = "epsilon"\ngama = 0.3\n',
     r"rule 'epsilon' has no parameter 'gama' \(its parameters: epsilon, ignore_bias\)"),
    ('include = "_lrp_base"\n[[rule]]\nposition = "middle"\nrule = "flat"\n', r"position must be one of"),
    ('include = "no_such_part"\n', r"include 'no_such_part' is neither a file beside it nor a built-in part"),
])
def test_method_file_errors_name_the_entry_node_and_expectation(tmp_path, text, message):
    with pytest.raises(nnxplain.NnxplainError, match=message):
        compile_file(tmp_path, text)


def test_unsupported_node_in_a_strict_method_is_an_error(tmp_path):
    """A division by a computed tensor is no linear layer: the z-rule refuses it, by name."""
    nodes = [helper.make_node("Gemm", ["input", "w"], ["h"], name="fc"),
             helper.make_node("Div", ["input", "h"], ["logits"], name="ratio")]
    graph = helper.make_graph(nodes, "gate", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
                              [onnx.numpy_helper.from_array(np.eye(3, dtype=np.float32), "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    with pytest.raises(nnxplain.NnxplainError, match=r"node 'ratio' \(Div\): the z-rule on Div needs one computed "
                                                     r"operand and a constant"):
        nnxplain.compile(proto, ["lrp.epsilon"])


def test_user_method_file_from_the_cli(tmp_path):
    rules = tmp_path / "my_method.toml"
    rules.write_text('description = "mine"\ninclude = "lrp.epsilon"\n[[rule]]\nposition = "first"\nrule = "w_square"\n')
    out = tmp_path / "out.onnx"
    cmd = [sys.executable, "-m", "nnxplain", "compile", str(ZOO_DIR / "digits_cnn.onnx"), "--rules", str(rules),
           "--param", "epsilon=0.1", "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    x = zoo_batch("digits_cnn")
    got = session(str(out)).run(["my_method"], {"input": x})[0]
    same = parse_method({"include": "_lrp_base", "params": {"epsilon": 0.1}, "rule": [
        {"position": "first", "rule": "w_square"}, {"ops": ["convolution", "linear"], "rule": "epsilon"}]}, "same")
    want = session(nnxplain.compile(ZOO_DIR / "digits_cnn.onnx", [same])).run(["same"], {"input": x})[0]
    assert np.array_equal(got, want)
    bad = subprocess.run(cmd[:-2] + ["--param", "low=1", "-o", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("nnxplain: error: parameter 'low' belongs to none")


# ------------------------------------------------------------------ reading a ReLU's output instead of z

@pytest.mark.parametrize("name", ["digits_cnn", "resnet", "concat_cnn"])
@pytest.mark.parametrize("rules", [
    "lrp.epsilon", "lrp.z", "lrp.sequential_preset_a", "lrp.alpha_2_beta_1", "epsilon_alpha2_beta1",
    [{"ops": ["linear"], "rule": "flat"}, {"ops": ["convolution"], "rule": "epsilon", "epsilon": 0.01}],
], ids=["epsilon", "z", "preset_a", "alpha2_beta1", "zennit_alpha2_beta1", "flat_above"])
def test_reading_relu_output_for_z_changes_nothing(name, rules, monkeypatch):
    """Where the relevance at a ReLU's output is provably 0 where the output is 0, the epsilon and z
    rules read the ReLU's output instead of the pre-activation (so Conv + Relu fuse). Where a flat or
    w^2 rule above breaks that guarantee, they must not. Either way the result is the same as without."""
    import nnxplain.lrp as lrp
    method = rules if isinstance(rules, str) else parse_method({"include": "_lrp_base", "rule": rules}, "mixed")
    name_of = method if isinstance(method, str) else method.name
    x = zoo_batch(name)
    x[0] = 0
    path = ZOO_DIR / f"{name}.onnx"
    fast = nnxplain.compile(path, [method])
    with monkeypatch.context() as m:
        m.setattr(lrp, "relu_after", lambda e, node, zero_where_zero: None)
        plain = nnxplain.compile(path, [method])
    got = session(fast).run([name_of], {"input": x})[0]
    want = session(plain).run([name_of], {"input": x})[0]
    assert relative_error(got, want) < 1e-6


def test_epsilon_lets_every_conv_relu_pair_fuse():
    model = nnxplain.compile(ZOO_DIR / "digits_cnn.onnx", ["lrp.epsilon"])
    readers = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n.op_type)
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm") and not n.name.startswith("lrp.epsilon/")]
    followed_by_relu = [c for c in convs if readers.get(c.output[0]) == ["Relu"] or "Relu" in readers.get(c.output[0], [])]
    assert len(followed_by_relu) == 3 and all(readers[c.output[0]] == ["Relu"] for c in followed_by_relu)


def test_unfused_batchnorm_rule_is_innvestigates():
    """A BatchNormalization that cannot be folded (here it reads the model input) becomes Mul + Add;
    the z-rule there gives iNNvestigate's BatchNormalization rule R_in = x * scale / y * R."""
    rng = np.random.default_rng(4)
    gamma, beta = rng.uniform(0.5, 1.5, 6).astype(np.float32), rng.uniform(-0.5, 0.5, 6).astype(np.float32)
    mean, var = rng.uniform(-0.5, 0.5, 6).astype(np.float32), rng.uniform(0.5, 2, 6).astype(np.float32)
    w, b = rng.standard_normal((6, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("BatchNormalization", ["input", "g", "bt", "m", "v"], ["bn"], name="bn"),
             helper.make_node("Gemm", ["bn", "w", "b"], ["logits"], name="fc")]
    inits = {"g": gamma, "bt": beta, "m": mean, "v": var, "w": w, "b": b}
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
                              [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    got = session(nnxplain.compile(proto, ["lrp.z"])).run(["lrp.z"], {"input": x})[0]
    x64 = x.astype(np.float64)
    scale = gamma / np.sqrt(var.astype(np.float64) + 1e-5)
    y = x64 * scale + (beta - mean * scale)  # the BatchNormalization's output
    logits = y @ w + b
    R_out = np.zeros_like(logits)
    k = logits.argmax(1)
    R_out[np.arange(5), k] = logits[np.arange(5), k]
    R_y = y * ((R_out / logits) @ w.T)  # LRP-z at the Gemm
    want = x64 * scale / y * R_y  # iNNvestigate's BatchNormalization rule
    assert relative_error(got, want) < TOL
