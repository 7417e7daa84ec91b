"""LRP against Captum: its published hand-computed values for its small test networks (captum's
tests/attr/test_lrp.py), and Captum's LRP on the same weights for the zoo models Captum supports.

Captum starts from the selected output's value, as iNNvestigate and nnxplain do. Its default
epsilon is 1e-9; its GammaRule and Alpha1_Beta0_Rule change the weights only (the input keeps its
sign), so with set_bias_to_zero they equal nnxplain's gamma (ignore_bias) and z_plus_fast rules.

Zoo models Captum does not support are left out, and why: mlp (LeakyReLU, Sigmoid and a custom
MatMul layer have no Captum rule), resnet and mobilenet_relu6 (their residual `+` is not a module,
so Captum hands the full relevance to both branches), concat_cnn (a tensor feeding both a module and
an unhooked torch.cat gets Captum's input hook applied to the concatenated branch's relevance too).
"""
import numpy as np
import pytest
import torch
from captum.attr import LRP
from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule, GammaRule, IdentityRule
from torch import nn

import nnxplain
from models import zoo
from nnxplain.methods import parse_method
from nnxplain.runtime import session

from conftest import ZOO_DIR, relative_error

TOL = 1e-5


def export(module, example, path):
    module.eval()
    torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


def explain(path, method, x, neuron=None, **params):
    selection = "max_activation" if neuron is None else "index"
    model = nnxplain.compile(path, [method], neuron_selection=selection, params=params)
    feeds = {"input": np.asarray(x, np.float32)}
    if neuron is not None:
        feeds["neuron"] = np.full(len(x), neuron, np.int64)
    return session(model).run([model.graph.output[-1].name], feeds)[0]


def method(rules: list[dict], **extra):
    return parse_method({"include": "_lrp_base", "rule": rules, **extra}, "captum_check")


# ------------------------------------------------------------------ Captum's hand-computed values

class SimpleLRPModel(nn.Module):
    """captum tests/attr/test_lrp.py: _get_simple_model."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 3, bias=False)
        self.linear.weight.data.fill_(2.0)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(3, 1, bias=False)
        self.linear2.weight.data.fill_(3.0)
        self.dropout = nn.Dropout(p=0.01)

    def forward(self, x):
        return self.dropout(self.linear2(self.relu(self.linear(x))))


SIMPLE_INPUT = np.array([[1.0, 2.0, 3.0]], np.float32)


def simple_model(tmp_path, first_weight=None):
    model = SimpleLRPModel()
    if first_weight is not None:
        with torch.no_grad():
            model.linear.weight.data[0][0] = first_weight
    return export(model, torch.from_numpy(SIMPLE_INPUT), tmp_path / "simple.onnx")


def test_captum_simple_epsilon(tmp_path):
    got = explain(simple_model(tmp_path), "lrp.epsilon", SIMPLE_INPUT, epsilon=1e-9)
    assert relative_error(got, [[18.0, 36.0, 54.0]]) < TOL


def test_captum_simple_epsilon_batch(tmp_path):
    x = np.repeat(SIMPLE_INPUT, 2, axis=0)
    got = explain(simple_model(tmp_path), "lrp.epsilon", x, epsilon=1e-9)
    assert relative_error(got, [[18.0, 36.0, 54.0]] * 2) < TOL


def test_captum_simple_gamma(tmp_path):
    """GammaRule(gamma=1) on the first layer, GammaRule() (0.25) on the second, by node-name globs."""
    m = method([{"name": "/linear2/*", "rule": "gamma", "gamma": 0.25}, {"name": "/linear/*", "rule": "gamma", "gamma": 1.0}])
    got = explain(simple_model(tmp_path, first_weight=-2.0), m, SIMPLE_INPUT)
    assert relative_error(got, [[28 / 3, 104 / 3, 52]]) < TOL


def test_captum_simple_alpha1_beta0(tmp_path):
    got = explain(simple_model(tmp_path, first_weight=-2.0), "lrp.alpha_1_beta_0", SIMPLE_INPUT)
    assert relative_error(got, [[12, 33.6, 50.4]]) < TOL


def test_captum_simple_identity(tmp_path):
    """IdentityRule on the first (3 -> 3) layer: relevance passes unchanged; EpsilonRule on the second."""
    m = method([{"name": "/linear/*", "rule": "pass"}, {"ops": ["linear"], "rule": "epsilon", "epsilon": 1e-9}])
    got = explain(simple_model(tmp_path, first_weight=-2.0), m, SIMPLE_INPUT)
    assert relative_error(got, [[24.0, 36.0, 36.0]]) < TOL


def test_captum_simple_tanh(tmp_path):
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3, bias=False)
            self.linear.weight.data.fill_(0.1)
            self.tanh = nn.Tanh()
            self.linear2 = nn.Linear(3, 1, bias=False)
            self.linear2.weight.data.fill_(0.1)

        def forward(self, x):
            return self.linear2(self.tanh(self.linear(x)))

    path = export(Model(), torch.from_numpy(SIMPLE_INPUT), tmp_path / "tanh.onnx")
    got = explain(path, "lrp.epsilon", SIMPLE_INPUT, epsilon=1e-9)
    # Captum rounds to 4 digits: [0.0269, 0.0537, 0.0806]; exactly, output * x / 6
    expected = np.tanh(0.6) * 0.3 * SIMPLE_INPUT / 6
    assert np.allclose(got, [[0.0269, 0.0537, 0.0806]], atol=5e-5) and relative_error(got, expected) < TOL


def test_captum_basic_conv(tmp_path):
    """BasicModel_ConvNet_One_Conv on arange(16): conv (bias -50, -75), ReLU, view, linear, ReLU."""
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 2, 3, 1)
            self.relu1 = nn.ReLU()
            self.fc1 = nn.Linear(8, 4)
            self.conv1.weight = nn.Parameter(torch.ones(2, 1, 3, 3))
            self.conv1.bias = nn.Parameter(torch.tensor([-50.0, -75.0]))
            self.relu2 = nn.ReLU()
            self.fc1.weight = nn.Parameter(torch.cat([torch.ones(4, 5), -1 * torch.ones(4, 3)], dim=1))
            self.fc1.bias = nn.Parameter(torch.zeros(4))

        def forward(self, x):
            x = self.relu1(self.conv1(x))
            x = x.view(-1, 8)
            return self.relu2(self.fc1(x))

    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    path = export(Model(), torch.from_numpy(x), tmp_path / "conv.onnx")
    got = explain(path, "lrp.epsilon", x, epsilon=1e-9)
    expected = [[[[0, 1, 2, 3], [0, 5, 6, 7], [0, 9, 10, 11], [0, 0, 0, 0]]]]
    assert relative_error(got, expected) < TOL


def test_captum_skip_connection(tmp_path):
    """The residual Add shares relevance in proportion to its inputs (z-rule)."""
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2, bias=False)
            self.linear.weight.data.fill_(5)

        def forward(self, x):
            return self.linear(x) + x

    x = np.array([[2.0, 3.0]], np.float32)
    path = export(Model(), torch.from_numpy(x), tmp_path / "skip.onnx")
    got = explain(path, "lrp.epsilon", x, neuron=1, epsilon=1e-9)
    assert relative_error(got, [[10, 18]]) < TOL


def test_captum_maxpool1d(tmp_path):
    """A linear layer on the last axis (MatMul), then max pooling: the winner takes the relevance."""
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2, bias=False)
            self.linear.weight.data.fill_(2.0)
            self.maxpool = nn.MaxPool1d(2)

        def forward(self, x):
            return self.maxpool(self.linear(x))

    x = np.array([[[1.0, 2.0], [5.0, 6.0]]], np.float32)
    path = export(Model(), torch.from_numpy(x), tmp_path / "maxpool.onnx")
    got = explain(path, "lrp.epsilon", x, neuron=1, epsilon=1e-9)
    assert relative_error(got, [[[0.0, 0.0], [10, 12]]]) < TOL


# ------------------------------------------------------------------ Captum LRP on zoo models

CAPTUM_ZOO = ["digits_cnn", "lenet_bn", "conv1d"]
NO_BN = ["digits_cnn", "conv1d"]  # gamma and alpha-beta differ once BatchNormalization is folded into the conv


def captum_lrp(name, x, layer_rule, wobble=None):
    """Captum's LRP on the zoo model's torch twin: `layer_rule()` on Conv / Linear, EpsilonRule on
    pooling, Flatten and BatchNorm, activations passed (Captum's default for ReLU and Tanh).
    In float64; `wobble` (a numpy Generator) moves every weight and input by float32 rounding."""
    net = zoo.twin(name).double()  # float64: the reference, not a second float32 rounding
    if wobble is not None:
        with torch.no_grad():
            for p in net.parameters():
                p.mul_(1 + 2.0 ** -24 * torch.from_numpy(wobble.standard_normal(tuple(p.shape))))
        x = x * (1 + 2.0 ** -24 * wobble.standard_normal(x.shape))
    for module in net.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            module.rule = layer_rule()
        elif isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                                 nn.AdaptiveMaxPool2d, nn.Flatten, nn.BatchNorm2d)):
            module.rule = EpsilonRule()
    xt = torch.from_numpy(x.astype(np.float64))
    with torch.no_grad():
        target = net(xt).argmax(1)
    return LRP(net).attribute(xt.clone(), target=target).detach().numpy()


def agrees_with_captum(got, name, x, layer_rule):
    """Relative error within 1e-5, plus what the exact result itself moves when weights and inputs
    move by float32 rounding (rules whose denominators mix signs can have z near 0 on signed inputs)."""
    want = captum_lrp(name, x, layer_rule)
    rng = np.random.default_rng(0)
    moved = max(np.abs(captum_lrp(name, x, layer_rule, wobble=rng) - want).max() for _ in range(3))
    error, allowance = relative_error(got, want), 10 * moved / np.abs(want).max()
    print(f"{name}: relative error {error:.1e}, float32 allowance {allowance:.1e}")
    return error < TOL + allowance


def zoo_input(name, nonnegative=False):
    torch.manual_seed(11)
    x = torch.randn(4, *zoo.MODELS[name][1]).numpy()
    return np.abs(x) if nonnegative else x


@pytest.mark.parametrize("name", CAPTUM_ZOO)
def test_epsilon_equals_captum_on_zoo(name):
    x = zoo_input(name)
    got = explain(ZOO_DIR / f"{name}.onnx", "lrp.epsilon", x, epsilon=1e-9)
    assert agrees_with_captum(got, name, x, EpsilonRule)


@pytest.mark.parametrize("name", NO_BN)
def test_gamma_equals_captum_on_zoo(name):
    x = zoo_input(name)
    m = method([{"ops": ["convolution", "linear"], "rule": "gamma", "gamma": 0.25, "ignore_bias": True}])
    got = explain(ZOO_DIR / f"{name}.onnx", m, x)
    assert agrees_with_captum(got, name, x, lambda: GammaRule(gamma=0.25, set_bias_to_zero=True))


@pytest.mark.parametrize("name", NO_BN)
def test_z_plus_fast_equals_captum_alpha1_beta0_on_zoo(name):
    """Captum's Alpha1_Beta0_Rule keeps the input's sign: iNNvestigate's z+ fast, bias dropped."""
    x = zoo_input(name)
    got = explain(ZOO_DIR / f"{name}.onnx", "lrp.z_plus_fast", x)
    assert agrees_with_captum(got, name, x, lambda: Alpha1_Beta0_Rule(set_bias_to_zero=True))


@pytest.mark.parametrize("name", ["digits_cnn"])  # ReLU only: conv1d's Tanh makes later inputs signed
def test_alpha_1_beta_0_IB_equals_captum_on_nonnegative_inputs(name):
    """For inputs >= 0 splitting the input by sign changes nothing: alpha1-beta0 (no bias) is Captum's."""
    x = zoo_input(name, nonnegative=True)
    got = explain(ZOO_DIR / f"{name}.onnx", "lrp.alpha_1_beta_0_IB", x)
    assert agrees_with_captum(got, name, x, lambda: Alpha1_Beta0_Rule(set_bias_to_zero=True))


def test_identity_equals_captum_on_a_square_layer(tmp_path):
    """Captum's IdentityRule on a layer that keeps the shape: relevance passes unchanged."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))
    path = export(net, torch.randn(2, 6), tmp_path / "square.onnx")
    x = torch.randn(5, 6).numpy()
    net[0].rule, net[2].rule = IdentityRule(), EpsilonRule()
    with torch.no_grad():
        target = net(torch.from_numpy(x)).argmax(1)
    want = LRP(net).attribute(torch.from_numpy(x), target=target).detach().numpy()
    m = method([{"name": "/0/*", "rule": "pass"}, {"ops": ["linear"], "rule": "epsilon", "epsilon": 1e-9}])
    assert relative_error(explain(path, m, x), want) < TOL
