"""Sampling methods (integrated_gradients, smoothgrad, vargrad, any base method smoothed) equal Captum on
the same weights: IntegratedGradients with riemann_right and the same steps, NoiseTunnel fed the same
noise. One compiled graph does all samples; chunks change nothing but the memory."""
import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

import nnxplain
from models import zoo
from nnxplain.errors import NnxplainError
from nnxplain.runtime import session
from nnxplain.sampling import noise

from conftest import ZOO_DIR, relative_error

TOL = 1e-5
MODELS = ["mlp", "lenet_bn", "resnet", "conv1d"]


def batch(name, n=3):
    torch.manual_seed(3)
    return torch.randn(n, *zoo.MODELS[name][1])


def run(name, method, x, feeds=None, **kwargs):
    model = nnxplain.compile(ZOO_DIR / f"{name}.onnx", [method], **kwargs)
    return session(model).run([model.graph.output[-1].name], {"input": x.numpy(), **(feeds or {})})[0], model


@pytest.mark.parametrize("name", MODELS)
def test_integrated_gradients_equals_captum_riemann_right(name):
    net, x = zoo.twin(name), batch(name)
    target = net(x).argmax(1)
    expected = IntegratedGradients(net).attribute(x, target=target, n_steps=16, method="riemann_right")
    out, _ = run(name, "integrated_gradients", x, params={"steps": 16})
    assert relative_error(out, expected.detach().numpy()) < TOL


def test_integrated_gradients_reference_and_chunks():
    name = "lenet_bn"
    net, x = zoo.twin(name), batch(name)
    target = net(x).argmax(1)
    expected = IntegratedGradients(net).attribute(x, baselines=0.5, target=target, n_steps=10,
                                                  method="riemann_right").detach().numpy()
    whole, model = run(name, "integrated_gradients", x, params={"steps": 10, "reference_inputs": 0.5})
    chunked, chunked_model = run(name, "integrated_gradients", x, params={"steps": 10, "reference_inputs": 0.5,
                                                                         "chunk": 4})
    assert relative_error(whole, expected) < TOL
    assert relative_error(chunked, expected) < TOL
    convs = lambda m: sum(n.op_type == "Conv" for n in m.graph.node)
    assert convs(chunked_model) > convs(model), "three blocks (4 + 4 + 2 points) are three forward copies"


def test_integrated_gradients_completeness_on_a_relu_network():
    """IG sums to f(x) - f(reference) up to the Riemann error, which shrinks with the steps."""
    name = "lenet_bn"
    net, x = zoo.twin(name), batch(name)
    with torch.no_grad():
        y, y0 = net(x), net(torch.zeros_like(x))
    index = y.argmax(1)
    gap = (y.gather(1, index[:, None]) - y0.gather(1, index[:, None])).squeeze(1).numpy()
    errors = []
    for steps in (4, 256):
        out, _ = run(name, "integrated_gradients", x, params={"steps": steps})
        errors.append(np.abs(out.reshape(len(x), -1).sum(1) - gap).max())
    assert errors[1] < errors[0] and errors[1] < 0.02 * np.abs(gap).max()


class SameNoise:
    """Captum's NoiseTunnel with our noise: it repeats each input n times (batch-major, b * n + s);
    our graph takes noise sample-major, [n, batch, ...]."""

    def __init__(self, monkeypatch, unit_noise, scale):
        def add_noise(input, stdev, n):
            moved = torch.from_numpy(unit_noise).transpose(0, 1).reshape(input.shape[0] * n, *input.shape[1:])
            return input.repeat_interleave(n, dim=0) + stdev * moved
        monkeypatch.setattr(NoiseTunnel, "_add_noise_to_input", staticmethod(add_noise))


@pytest.mark.parametrize("name", ["mlp", "resnet"])
@pytest.mark.parametrize("method, nt_type, params", [
    ("smoothgrad", "smoothgrad", {}),
    ("smoothgrad", "smoothgrad_sq", {"postprocess": "square"}),
    ("vargrad", "vargrad", {}),
])
def test_noise_methods_equal_captum_noise_tunnel_with_the_same_noise(monkeypatch, name, method, nt_type, params):
    net, x = zoo.twin(name), batch(name)
    n, scale = 8, 0.3
    unit = noise((n,) + tuple(x.shape), seed=5)
    SameNoise(monkeypatch, unit, scale)
    target = net(x).argmax(1)
    expected = NoiseTunnel(Saliency(net)).attribute(x, nt_type=nt_type, nt_samples=n, stdevs=scale, target=target,
                                                    abs=False).detach().numpy()
    out, model = run(name, method, x, feeds={f"{method}/noise": unit},
                     params={"augment_by_n": n, "noise_scale": scale, "noise": "input", **params})
    assert relative_error(out, expected) < TOL
    chunked, _ = run(name, method, x, feeds={f"{method}/noise": unit},
                     params={"augment_by_n": n, "noise_scale": scale, "chunk": 3, "noise": "input", **params})
    assert relative_error(chunked, expected) < TOL


def test_smoothgrad_converges_to_the_captum_mean_with_its_own_noise():
    """Independent noise on both sides: the two means agree within their sampling error."""
    name = "mlp"
    net, x = zoo.twin(name), batch(name, 2)
    target = net(x).argmax(1)
    torch.manual_seed(0)
    expected = NoiseTunnel(Saliency(net)).attribute(x, nt_type="smoothgrad", nt_samples=2000, stdevs=0.2,
                                                    target=target, abs=False, nt_samples_batch_size=500)
    analyzer = nnxplain.create_analyzer("smoothgrad", str(ZOO_DIR / "mlp.onnx"), augment_by_n=2000, noise_scale=0.2,
                                        chunk=500)
    assert relative_error(analyzer.analyze(x.numpy()), expected.detach().numpy()) < 0.05


def test_sampling_is_reproducible_with_the_seed():
    x = batch("lenet_bn").numpy()
    analyzer = nnxplain.create_analyzer("smoothgrad", str(ZOO_DIR / "lenet_bn.onnx"), augment_by_n=4, seed=1)
    first, second = analyzer.analyze(x), analyzer.analyze(x)
    again = nnxplain.create_analyzer("smoothgrad", str(ZOO_DIR / "lenet_bn.onnx"), augment_by_n=4, seed=1).analyze(x)
    other = nnxplain.create_analyzer("smoothgrad", str(ZOO_DIR / "lenet_bn.onnx"), augment_by_n=4, seed=2).analyze(x)
    assert np.array_equal(first, second) and np.array_equal(first, again)
    assert not np.allclose(first, other)


@pytest.mark.parametrize("method", ["smoothgrad", "vargrad"])
def test_the_noise_is_generated_in_each_run_not_folded_when_loaded(method):
    """The generator's sample dims come from the input's run-time shape: with constant inputs only,
    ONNX Runtime computes it when it loads the file (40 s for 50 samples of 3x224x224)."""
    explainer = nnxplain.compile(ZOO_DIR / "lenet_bn.onnx", [method])
    constants = {t.name for t in explainer.graph.initializer}
    counters = [n for n in explainer.graph.node if n.op_type == "Range"]  # the generator's element index
    assert counters and all(n.input[1] not in constants for n in counters)


def test_any_backward_method_can_be_smoothed(tmp_path):
    """SmoothGrad over lrp.epsilon is a method file; it equals the mean of lrp.epsilon over the noisy copies."""
    (tmp_path / "smooth_lrp.toml").write_text(
        'description = "SmoothGrad over LRP-epsilon"\nkind = "sampling"\nbase = "lrp.epsilon"\n'
        '[sampling]\ninputs = "noise"\nreduce = "mean"\n'
        '[params]\naugment_by_n = 5\nnoise_scale = 0.5\nseed = 0\nepsilon = 0.01\nnoise = "input"\n')
    x = batch("lenet_bn")
    unit = noise((5,) + tuple(x.shape), seed=0)
    neuron = np.array([1, 4, 7], np.int64)
    smoothed, _ = run("lenet_bn", str(tmp_path / "smooth_lrp.toml"), x, feeds={"smooth_lrp/noise": unit,
                                                                               "neuron": neuron},
                      neuron_selection="index")
    plain = nnxplain.compile(ZOO_DIR / "lenet_bn.onnx", ["lrp.epsilon"], neuron_selection="index",
                             params={"epsilon": 0.01})
    noisy = (x.numpy()[None] + 0.5 * unit).reshape(-1, *x.shape[1:])
    each = session(plain).run(["lrp.epsilon"], {"input": noisy, "neuron": np.tile(neuron, 5)})[0]
    assert relative_error(smoothed, each.reshape(5, *x.shape).mean(0)) < TOL


def test_sampling_method_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "sampling"\nbase = "gradient"\n[sampling]\ninputs = "noise"\nreduce = "median"\n'
                   '[params]\naugment_by_n = 2\nnoise_scale = 1.0\nseed = 0\n')
    with pytest.raises(NnxplainError, match="reduce must be one of"):
        nnxplain.compile(ZOO_DIR / "mlp.onnx", [str(bad)])
    bad.write_text('kind = "sampling"\nbase = "nothing"\n[sampling]\ninputs = "path"\nreduce = "mean"\n'
                   '[params]\nsteps = 2\n')
    with pytest.raises(NnxplainError, match="base method 'nothing' is unknown"):
        nnxplain.compile(ZOO_DIR / "mlp.onnx", [str(bad)])
    with pytest.raises(NnxplainError, match="'steps' must be at least 1"):
        nnxplain.compile(ZOO_DIR / "mlp.onnx", ["integrated_gradients"], params={"steps": 0})
    with pytest.raises(NnxplainError, match="method 'integrated_gradients' has no parameter 'stepz'"):
        nnxplain.compile(ZOO_DIR / "mlp.onnx", ["integrated_gradients"], params={"integrated_gradients.stepz": 3})


def test_cli_analyze_feeds_the_noise(tmp_path, capsys):
    from nnxplain.cli import main
    x = batch("lenet_bn").numpy()
    np.save(tmp_path / "x.npy", x)
    assert main(["analyze", str(ZOO_DIR / "lenet_bn.onnx"), "-m", "smoothgrad", "-p", "augment_by_n=3",
                 "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "r.npy")]) == 0
    expected = nnxplain.create_analyzer("smoothgrad", str(ZOO_DIR / "lenet_bn.onnx"), augment_by_n=3).analyze(x)
    assert np.array_equal(np.load(tmp_path / "r.npy"), expected)


def test_a_fixed_batch_size_is_refused_by_name(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph([helper.make_node("Gemm", ["input", "W"], ["logits"], transB=1)], "fixed",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 3])],
                              [numpy_helper.from_array(np.ones((3, 4), np.float32), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, tmp_path / "fixed.onnx")
    with pytest.raises(NnxplainError, match="input 'input' has a fixed batch size 2"):
        nnxplain.compile(tmp_path / "fixed.onnx", ["integrated_gradients"])


def test_chunks_bound_the_memory_of_a_run():
    """Blocks run one after the other (each reads its shape from the previous block's sum), so the peak
    memory of a run follows the block, not all the samples."""
    from nnxplain.bench import peak_memory
    x = np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)
    peaks = {}
    for chunk in (0, 4):
        model = nnxplain.compile(ZOO_DIR / "resnet.onnx", ["integrated_gradients"], params={"steps": 64, "chunk": chunk})
        peaks[chunk] = peak_memory(model.SerializeToString(), {"input": x}, threads=1)
    assert peaks[4] < 0.5 * peaks[0], peaks


@pytest.mark.parametrize("rule", ["left", "middle", "trapezoid"])
def test_integrated_gradients_riemann_rules_equal_captum(rule):
    """Captum's riemann_trapezoid weights its 12 points by 1/12 (1/24 at the ends), which sum to 11/12:
    the trapezoid rule on 12 points spaced 1/11 is that times 12/11."""
    name = "lenet_bn"
    net, x = zoo.twin(name), batch(name)
    target = net(x).argmax(1)
    expected = IntegratedGradients(net).attribute(x, baselines=0.25, target=target, n_steps=12,
                                                  method=f"riemann_{rule}").detach().numpy()
    if rule == "trapezoid":
        expected = expected * 12 / 11
    out, _ = run(name, "integrated_gradients", x, params={"steps": 12, "riemann": rule, "reference_inputs": 0.25})
    chunked, _ = run(name, "integrated_gradients", x, params={"steps": 12, "riemann": rule, "reference_inputs": 0.25,
                                                             "chunk": 5})
    assert relative_error(out, expected) < TOL and relative_error(chunked, expected) < TOL


@pytest.mark.parametrize("name", ["mlp", "resnet"])
def test_integrated_gradients_left_riemann_is_innvestigates_sum(name):
    """iNNvestigate's IntegratedGradients: x times the mean over k = 0..steps-1 of the gradient at
    k/steps * x (the reference 0 is a point of the sum, x is not); a direct torch sum is the oracle."""
    net, x = zoo.twin(name), batch(name).double()
    net = net.double()
    target = net(x).argmax(1)
    steps, total = 8, torch.zeros_like(x)
    for k in range(steps):
        point = (k / steps * x).requires_grad_(True)
        net(point).gather(1, target[:, None]).sum().backward()
        total += point.grad
    expected = (x * total / steps).numpy()
    out, _ = run(name, "integrated_gradients", x.float(), params={"steps": steps, "riemann": "left"})
    assert relative_error(out, expected) < TOL
    right, _ = run(name, "integrated_gradients", x.float(), params={"steps": steps})
    assert relative_error(right, expected) > 1e-3  # the default (right) sum is another one


def test_integrated_gradients_riemann_errors():
    with pytest.raises(NnxplainError, match="riemann must be one of right, left, middle, trapezoid, got 'upper'"):
        nnxplain.compile(ZOO_DIR / "mlp.onnx", ["integrated_gradients"], params={"riemann": "upper"})
    with pytest.raises(NnxplainError, match="trapezoid needs steps >= 2"):
        nnxplain.compile(ZOO_DIR / "mlp.onnx", ["integrated_gradients"], params={"riemann": "trapezoid", "steps": 1})


def test_sampling_methods_on_a_model_whose_nodes_have_no_names():
    """Copies of the forward pass are named after the nodes they copy: unnamed nodes get names first,
    or ONNX Runtime would refuse two nodes of one name."""
    from onnx import TensorProto, helper, numpy_helper
    w = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
                               helper.make_node("MatMul", ["r", "v"], ["y"])], "unnamed",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w[:3, :2].copy(), "v")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    explainer = nnxplain.compile(model, ["integrated_gradients", "deeplift"], params={"steps": 4})
    got = session(explainer).run(["integrated_gradients", "deeplift"], {"x": x})
    assert all(np.isfinite(g).all() and g.shape == x.shape for g in got)
