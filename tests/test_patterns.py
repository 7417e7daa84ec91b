"""PatternNet and PatternAttribution: fitted patterns and both backward passes equal a float64 numpy
reference (explicit im2col), the paper's toy example comes out as the paper says, and patterns
equal to the weights turn PatternNet into the gradient on every zoo model."""
import numpy as np
import pytest
import torch

import nnxplain
from models import zoo
from nnxplain import patterns as P
from nnxplain.errors import NnxplainError
from nnxplain.runtime import session

import patterns_reference as R
from conftest import ZOO_DIR, relative_error

TOL = 1e-5


def small_cnn(rng):
    """Strided, padded, dilated and grouped convolutions, a Gemm with alpha, a bare MatMul."""
    return R.Net([
        R.Conv(rng.normal(size=(6, 3, 3, 3)), rng.normal(size=6) * 0.5, stride=2, pad=1, name="conv1"), R.RELU,
        R.Conv(rng.normal(size=(4, 3, 3, 3)) / 3, rng.normal(size=4) * 0.5, pad=2, dilation=2, group=2,
               name="conv2"), R.RELU,
        R.FLATTEN,
        R.Dense(rng.normal(size=(100, 12)) / 10, rng.normal(size=12), alpha=0.5, name="dense"), R.RELU,
        R.Dense(rng.normal(size=(12, 5)) / 3, name="out"),
    ], (3, 9, 9))


def small_mlp(rng):
    """Dense layers with a dead unit: its bias keeps it below zero on every sample."""
    b1 = rng.normal(size=16)
    b1[3] = -100.0
    return R.Net([R.Dense(rng.normal(size=(10, 16)) / 3, b1, name="fc1"), R.RELU,
                  R.Dense(rng.normal(size=(16, 8)) / 4, rng.normal(size=8), name="fc2"), R.RELU,
                  R.Dense(rng.normal(size=(8, 4)) / 3, rng.normal(size=4), name="fc3")], (10,))


NETS = {"cnn": small_cnn, "mlp": small_mlp}


@pytest.fixture(scope="module", params=sorted(NETS))
def net_and_data(request):
    rng = np.random.default_rng(1)
    net = NETS[request.param](rng)
    data = rng.normal(size=(96, *net.input_shape))
    data[:8] = np.maximum(data[:8], 0)   # some non-negative inputs, some exact zeros
    data[8:12] = 0.0
    return net, data


@pytest.mark.parametrize("pattern_type", P.PATTERN_TYPES)
def test_fitted_patterns_equal_the_numpy_estimators(net_and_data, pattern_type):
    net, data = net_and_data
    expected = R.fit(net, data, pattern_type)
    fitted = P.fit(net.onnx(), data.astype(np.float32), pattern_type=pattern_type, batch_size=32, progress=False)
    assert fitted.pattern_type == pattern_type and fitted.samples == len(data)
    assert set(fitted.rows) == set(expected)
    for layer, a in expected.items():
        assert relative_error(fitted.rows[layer], a) < TOL, layer


def test_a_neuron_never_in_its_regime_gets_a_zero_pattern(rng):
    net = small_mlp(rng)
    fitted = P.fit(net.onnx(), rng.normal(size=(64, 10)).astype(np.float32), "relu", progress=False)
    assert fitted.counts["fc1"][3] == 0
    assert np.all(fitted.rows["fc1"][3] == 0) and np.isfinite(fitted.rows["fc1"]).all()


@pytest.mark.parametrize("pattern_type", ["linear", "relu"])
def test_batching_does_not_change_the_patterns(net_and_data, pattern_type):
    net, data = net_and_data
    model, x = net.onnx(), data.astype(np.float32)
    whole = P.fit(model, x, pattern_type, batch_size=len(x), progress=False)
    for batching in (1, 7, 50):
        parts = P.fit(model, x, pattern_type, batch_size=batching, progress=False)
        for layer in whole.rows:
            assert relative_error(parts.rows[layer], whole.rows[layer]) < TOL, (batching, layer)
    uneven = P.fit(model, iter([x[:5], x[5:60], x[60:]]), pattern_type, progress=False)
    for layer in whole.rows:
        assert relative_error(uneven.rows[layer], whole.rows[layer]) < TOL, layer


@pytest.mark.parametrize("pattern_type", ["linear", "relu"])
@pytest.mark.parametrize("method", ["pattern.net", "pattern.attribution"])
def test_backward_passes_equal_the_numpy_reference(net_and_data, method, pattern_type):
    net, data = net_and_data
    patterns = R.fit(net, data, pattern_type)
    x = data[:10]
    y = net.forward(x)
    seed = np.zeros_like(y)
    rows_ = np.arange(len(x))
    seed[rows_, y.argmax(1)] = y[rows_, y.argmax(1)]   # iNNvestigate: start from the selected output's value
    if method == "pattern.net":
        expected = net.backward(seed, lambda layer: patterns[layer.name])
    else:
        expected = net.backward(seed, lambda layer: patterns[layer.name] * R.rows(layer))
    model = net.onnx()
    fitted = P.fit(model, data.astype(np.float32), pattern_type, progress=False)
    actual = nnxplain.create_analyzer(method, model, patterns=fitted).analyze(x.astype(np.float32))
    assert relative_error(actual, expected) < TOL


# ---------------------------------------------------------------------------------- the paper's toy example


def toy_model(w):
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["y"], name="filter")], "toy",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(np.asarray(w, np.float32).reshape(2, 1), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


@pytest.mark.parametrize("pattern_type", ["linear", "relu"])
def test_the_papers_toy_example(pattern_type):
    """x = a_s y + a_d eps with a_s = (1, 0), a_d = (1, 1); the filter w = (1, -1) cancels the
    distractor, so w^T x = y. The pattern recovers a_s; PatternNet the signal a_s y; the gradient
    is w; PatternAttribution w * a_s * y."""
    rng = np.random.default_rng(0)
    n = 1_000_000
    a_s, a_d, w = np.array([1.0, 0.0]), np.array([1.0, 1.0]), np.array([1.0, -1.0])
    y, eps = rng.normal(size=n), rng.normal(size=n)
    x = (np.outer(y, a_s) + np.outer(eps, a_d)).astype(np.float32)
    model = toy_model(w)
    fitted = P.fit(model, x, pattern_type, batch_size=65536, progress=False)
    assert np.abs(fitted.rows["filter"][0] - a_s).max() < 1e-3

    test = x[:100]
    signal = np.outer(test @ w, a_s)                    # a_s * y, with y = w^T x
    net = nnxplain.create_analyzer("patternnet", model, patterns=fitted).analyze(test)
    attribution = nnxplain.create_analyzer("patternattribution", model, patterns=fitted).analyze(test)
    gradient = nnxplain.create_analyzer("gradient", model).analyze(test)
    assert np.abs(net - signal).max() < 1e-3 * np.abs(signal).max()
    assert np.abs(attribution - w * signal).max() < 1e-3 * np.abs(signal).max()
    assert np.allclose(gradient, w)


# ---------------------------------------------------------------------------------- every zoo model


def weights_as_patterns(model) -> P.Patterns:
    layers = P.linear_layers(P.canonical_graph(model))
    return P.Patterns("linear", P.fingerprint(layers), {layer.key: layer.rows for layer in layers})


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_patterns_equal_to_the_weights_make_patternnet_the_gradient(name):
    """With a = w every linear layer transposes with its own weights: PatternNet is the gradient
    started from the output's value (torch autograd on the same weights), whatever else the model
    holds (BN folded into convs, residual adds, depthwise convs, 1-D convs, MatMul layers)."""
    path = ZOO_DIR / f"{name}.onnx"
    net = zoo.twin(name)
    torch.manual_seed(3)
    x = torch.randn(4, *zoo.MODELS[name][1], requires_grad=True)
    out = net(x)
    value = out.max(1).values
    grad = torch.autograd.grad(value.sum(), x)[0].numpy()
    expected = grad * value.detach().numpy().reshape(-1, *[1] * (x.dim() - 1))
    actual = nnxplain.create_analyzer("pattern.net", path, patterns=weights_as_patterns(path)).analyze(
        x.detach().numpy())
    assert relative_error(actual, expected) < TOL


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_pattern_attribution_runs_on_every_zoo_model(name, rng):
    path = ZOO_DIR / f"{name}.onnx"
    data = rng.normal(size=(64, *zoo.MODELS[name][1])).astype(np.float32)
    analyzer = nnxplain.create_analyzer("pattern.attribution", path).fit(data, batch_size=16, progress=False)
    result = analyzer.analyze(data[:4])
    assert result.shape == data[:4].shape and np.isfinite(result).all() and np.abs(result).max() > 0


# ---------------------------------------------------------------------------------- storing, errors


def test_saved_patterns_and_explainers_reproduce_the_fit(tmp_path):
    model = ZOO_DIR / "digits_cnn.onnx"
    data = np.load(ZOO_DIR / "digits_train.npz")["x"]
    test = np.load(ZOO_DIR / "digits_test.npz")["x"][:16]
    analyzer = nnxplain.create_analyzer("pattern.attribution", model, pattern_type="linear")
    analyzer.fit(data, batch_size=256, progress=False)
    assert analyzer.patterns.pattern_type == "linear"
    expected = analyzer.analyze(test)
    analyzer.save_patterns(tmp_path / "patterns.npz")
    analyzer.save(tmp_path / "explainer.onnx")

    reloaded = nnxplain.create_analyzer("pattern.attribution", model, patterns=tmp_path / "patterns.npz")
    assert relative_error(reloaded.analyze(test), expected) < TOL
    standalone = session(str(tmp_path / "explainer.onnx"))   # the patterns are baked in
    assert np.array_equal(standalone.run(["pattern.attribution"], {"input": test})[0], expected)


def test_patterns_of_another_model_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    digits = weights_as_patterns(ZOO_DIR / "digits_cnn.onnx")
    digits.save(tmp_path / "digits.npz")
    with pytest.raises(NnxplainError, match="fitted on another model.*no pattern for layer"):
        nnxplain.compile(ZOO_DIR / "lenet_bn.onnx", ["pattern.net"], patterns=tmp_path / "digits.npz")
    net = small_mlp(rng)
    other = small_mlp(rng)   # same layers, other weights
    with pytest.raises(NnxplainError, match="fitted on another model.*weights"):
        nnxplain.compile(other.onnx(), ["pattern.net"], patterns=weights_as_patterns(net.onnx()))


def test_pattern_methods_without_patterns_say_how_to_fit_them():
    model = ZOO_DIR / "digits_cnn.onnx"
    with pytest.raises(NnxplainError, match="needs fitted patterns: fit them with `nnxplain fit"):
        nnxplain.compile(model, ["patternattribution"])
    analyzer = nnxplain.create_analyzer("pattern.net", model)
    with pytest.raises(NnxplainError, match=r"call analyzer.fit\(X\) first"):
        analyzer.analyze(np.zeros((1, 1, 8, 8), np.float32))


def test_not_a_patterns_file_is_refused(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(NnxplainError, match="other.npz: not a patterns file"):
        P.Patterns.load(tmp_path / "other.npz")


def test_fit_data_of_the_wrong_shape_names_the_argument():
    with pytest.raises(NnxplainError, match=r"data: input 'input' expects shape \['batch', 1, 8, 8\], got \[4, 64\]"):
        P.fit(ZOO_DIR / "digits_cnn.onnx", np.zeros((4, 64), np.float32), progress=False)


def test_unknown_pattern_type_is_refused():
    with pytest.raises(NnxplainError, match="'pattern_type' must be one of"):
        nnxplain.create_analyzer("pattern.net", ZOO_DIR / "digits_cnn.onnx", pattern_type="quadratic")


# ---------------------------------------------------------------------------------- signal quality (Eq. 1)


def test_im2col_of_signal_quality_matches_the_reference(rng):
    from nnxplain.signal_quality import patches
    layer = R.Conv(rng.normal(size=(4, 3, 3, 2)), np.zeros(4), stride=2, pad=1, dilation=2, group=2)
    x = rng.normal(size=(2, 6, 9, 8))
    expected, _ = R.im2col(layer, x)
    attrs = {"strides": [2, 2], "pads": [1, 1, 1, 1], "dilations": [2, 2]}
    assert np.array_equal(patches(x, layer.w.shape, attrs, 2), expected.reshape(-1, 2, expected.shape[-1]))


def test_signal_quality_ranks_the_estimators_on_the_digits_model():
    """Kindermans et al. found S_a+- >= S_a >= S_w > random (Fig. 3). On the trained digits CNN the
    fitted estimators remove far more of y from the distractor than the weights do, in every layer,
    and the weights more than a random direction where they remove anything at all."""
    from nnxplain.signal_quality import signal_quality
    model = ZOO_DIR / "digits_cnn.onnx"
    train, test = np.load(ZOO_DIR / "digits_train.npz")["x"], np.load(ZOO_DIR / "digits_test.npz")["x"]
    fit_part, regress_part = train[:len(train) // 2], train[len(train) // 2:]
    fitted = {t: P.fit(model, fit_part, t, progress=False) for t in P.PATTERN_TYPES}
    rho = signal_quality(model, {"random": "random", "S_w": "weights", "S_a": fitted["linear"],
                                 "S_a+-": (fitted["relu"], fitted["relu.negative"])},
                         regress_part, test, max_samples=20_000)
    for layer in rho["S_w"]:
        assert rho["S_a"][layer] > rho["S_w"][layer] + 0.3, layer
        assert rho["S_a+-"][layer] > rho["S_w"][layer] + 0.3, layer
        assert rho["S_w"][layer] >= rho["random"][layer] - 0.01, layer
    first = next(iter(rho["S_w"]))
    assert rho["S_w"][first] > rho["random"][first] + 0.1


@pytest.mark.parametrize("name", ["conv1d", "mobilenet_relu6", "lenet_bn", "resnet"])
def test_fitted_patterns_of_zoo_models_equal_the_estimators_on_their_patches(name):
    """1-D, depthwise, strided and BN-folded convolutions: the statistics graph's patterns equal
    Eq. 3 / Eq. 7 evaluated in float64 on the layers' patches (the im2col checked above)."""
    from nnxplain.signal_quality import layer_io, layer_samples
    path = ZOO_DIR / f"{name}.onnx"
    data = np.random.default_rng(5).normal(size=(24, *zoo.MODELS[name][1])).astype(np.float32)
    graph = P.canonical_graph(path)
    layers = P.linear_layers(graph)
    io = layer_io(graph, layers, data)
    for pattern_type in ("linear", "relu"):
        fitted = P.fit(path, data, pattern_type, batch_size=10, progress=False)
        for layer in layers:
            X, Y, positive = layer_samples(layer, *io[layer.key], max_samples=10**9, rng=None)  # Y = w^T x in float64
            X = np.repeat(X, layer.neurons // layer.groups, axis=1)        # [S, K, D]
            mask = np.ones_like(positive) if pattern_type == "linear" else positive
            count = np.maximum(mask.sum(0), 1)[:, None]
            cov = (np.einsum("sk,skd->kd", mask * Y, X) - np.einsum("sk,skd->kd", mask, X) * Y.mean(0)[:, None]) / count
            denom = np.einsum("kd,kd->k", layer.rows, cov)
            expected = np.where(denom[:, None] == 0, 0, cov / np.where(denom == 0, 1, denom)[:, None])
            assert relative_error(fitted.rows[layer.key], expected) < TOL, (pattern_type, layer.key)


def test_a_model_with_a_fixed_batch_size_is_fitted_in_batches_of_that_size(rng):
    net = small_mlp(rng)
    model = net.onnx()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 8
    data = rng.normal(size=(32, 10)).astype(np.float32)
    fixed = P.fit(model, data, "linear", batch_size=256, progress=False)
    expected = R.fit(net, data, "linear")
    for layer, a in expected.items():
        assert relative_error(fixed.rows[layer], a) < TOL, layer
    with pytest.raises(NnxplainError, match="batch size is fixed at 8.*a batch of 4 is left"):
        P.fit(model, data[:12], "linear", progress=False)


def test_a_model_at_opset_21_is_fitted_alike(rng):
    """The statistics graph is emitted at the model's opset (ReduceMean's axes moved to an input in 18)."""
    import onnx
    net = small_cnn(rng)
    data = rng.normal(size=(32, *net.input_shape))
    model = onnx.version_converter.convert_version(net.onnx(), 21)
    fitted = P.fit(model, data.astype(np.float32), "relu", progress=False)
    for layer, a in R.fit(net, data, "relu").items():
        assert relative_error(fitted.rows[layer], a) < TOL, layer


def test_pattern_attribution_can_be_smoothed_like_any_method():
    """A sampling method over pattern.attribution (a user's method file) is the mean of
    PatternAttribution over the same noisy copies of the input."""
    from nnxplain.methods import parse_method
    from nnxplain.sampling import noise
    model = ZOO_DIR / "digits_cnn.onnx"
    x = np.load(ZOO_DIR / "digits_test.npz")["x"][:4]
    patterns = P.fit(model, np.load(ZOO_DIR / "digits_train.npz")["x"], "relu", progress=False)
    smoothed = parse_method({"kind": "sampling", "base": "pattern.attribution",
                             "sampling": {"inputs": "noise", "reduce": "mean"},
                             "params": {"augment_by_n": 5, "noise_scale": 0.1, "seed": 3, "chunk": 0}}, "smooth_pa")
    actual = nnxplain.create_analyzer(smoothed, model, patterns=patterns).analyze(x)
    plain = nnxplain.create_analyzer("pattern.attribution", model, patterns=patterns)
    copies = x + 0.1 * noise((5,) + x.shape, 3)
    expected = np.mean([plain.analyze(c.astype(np.float32)) for c in copies], axis=0)
    assert relative_error(actual, expected) < TOL
