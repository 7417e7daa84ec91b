"""The paper's architectures (models/archs.py), each from the legacy and the dynamo exporter: every
built-in method compiled into one explainer, run once, and checked against its oracle on the torch
twin's weights:

- gradient, input_t_gradient: torch autograd;
- guided_backprop, deconvnet: Captum (started from the selected output's value);
- lrp.z: input x gradient (LRP-z with the bias is input x gradient on piecewise-linear networks:
  ReLU, max / average pooling, adds, concats, BatchNormalization folded or as an affine);
- lrp.epsilon, lrp.z_plus_fast: Captum's LRP (EpsilonRule, Alpha1_Beta0_Rule) on the sequential ones;
- pattern.net with patterns equal to the weights: the gradient times the output's value;
- every other method: finite, shaped like the input, not all zero (all 32 methods on the legacy
  exports; the dynamo exports, same weights in other op patterns, get the methods with an oracle).
"""
import numpy as np
import onnx
import pytest
import torch
from captum.attr import LRP, Deconvolution, GuidedBackprop
from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule
from torch import nn

import nnxplain
from models import archs
from nnxplain.load import load
from nnxplain.methods import available, load_method
from nnxplain.runtime import session
from nnxplain.sampling import noise_feeds
from nnxplain.support import stand_in_patterns

from conftest import lrp_methods, relative_error

TOL = 1e-5
GROUP = 8
COMPILED = [m for m in available() if load_method(m).kind != "perturbation"]  # occlusion and lime: no graph
ORACLE_METHODS = ["gradient", "input_t_gradient", "guided_backprop", "deconvnet", "lrp.z", "lrp.epsilon",
                  "lrp.z_plus_fast", "pattern.net"]
CASES = [(name, exporter) for name in archs.ARCHS for exporter in archs.EXPORTERS]
# required parameters of the methods that have some (the input range for the bounded rules)
PARAMS = {"deep_taylor.bounded.low": -4.0, "deep_taylor.bounded.high": 4.0, "deep_taylor.bounded.conservative.low": -4.0,
          "deep_taylor.bounded.conservative.high": 4.0, "epsilon_gamma_box.low": -4.0,
          "epsilon_gamma_box.high": 4.0, "lrp.alpha_beta.alpha": 2.0}


class Run:
    """One explainer with every built-in method, run on a seeded batch, and the torch twin."""

    def __init__(self, name, exporter):
        self.name, self.exporter = name, exporter
        self.path = archs.path(name, exporter)
        self.net = archs.twin(name)
        torch.manual_seed(5)
        self.x = torch.randn(3, *archs.ARCHS[name][1])
        with torch.no_grad():
            self.y = self.net(self.x)
        self.index = self.y.argmax(1)
        self.value = self.y.gather(1, self.index[:, None])
        # the legacy exports get every method; the dynamo exports (same weights, other op patterns) the
        # methods with an oracle, to keep the suite fast
        self.methods = [load_method(m) for m in (COMPILED if exporter == "legacy" else ORACLE_METHODS)]
        patterns = stand_in_patterns(load(self.path))
        self.out = {}
        # in groups: one explainer with all 32 methods takes ONNX Runtime far longer to load than four of 8
        for group in (self.methods[i:i + GROUP] for i in range(0, len(self.methods), GROUP)):
            names = {m.name for m in group}
            params = {k: v for k, v in PARAMS.items() if k.rsplit(".", 1)[0] in names}
            model = nnxplain.compile(self.path, group, params=params, patterns=patterns)
            outputs = [o.name for o in model.graph.output]
            sess = session(model)
            feeds = {"input": self.x.numpy(), **noise_feeds(sess, self.x.numpy())}  # sampling methods' noise
            self.out.update(zip(outputs, sess.run(None, feeds)))
        if "input_explanation" in self.out:
            self.out["input"] = self.out.pop("input_explanation")  # the model's input is called `input`

    def gradient(self):
        x = self.x.clone().requires_grad_(True)
        self.net(x).gather(1, self.index[:, None]).sum().backward()
        return x.grad.numpy()

    def captum_from_value(self, cls):
        value, net = self.value, self.net

        class Scaled(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, x):
                return self.net(x) * value

        return cls(Scaled()).attribute(self.x.clone(), target=self.index).detach().numpy()

    def ratio_gradient(self):
        """The gradient with every activation's derivative replaced by output / input: what LRP-z,
        which passes relevance through activations unchanged, multiplies the input by. It is the
        gradient for ReLU; for ReLU6 above 6 it is 6 / input where the derivative is 0."""
        net = archs.twin(self.name)
        for parent in list(net.modules()):
            for key, child in parent.named_children():
                if isinstance(child, nn.ReLU6):
                    setattr(parent, key, RatioReLU6())
        x = self.x.clone().requires_grad_(True)
        net(x).gather(1, self.index[:, None]).sum().backward()
        return x.grad.numpy()


class _Ratio(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        a = z.clamp(0, 6)
        ctx.save_for_backward(torch.where(z > 0, a / z.where(z > 0, torch.ones_like(z)), torch.zeros_like(z)))
        return a

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved_tensors[0]


class RatioReLU6(nn.Module):
    def forward(self, z):
        return _Ratio.apply(z)


_RUNS: dict = {}


def get_run(name, exporter) -> Run:
    if (name, exporter) not in _RUNS:  # kept: the Captum LRP tests below use them again (a few MB each)
        _RUNS[name, exporter] = Run(name, exporter)
    return _RUNS[name, exporter]


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{e}" for n, e in CASES])
def run(request):
    return get_run(*request.param)


def test_forward_equals_the_twin(run):
    assert relative_error(run.out["logits"], run.y.numpy()) < TOL


def test_gradient_family_equals_torch_autograd(run):
    grad = run.gradient()
    assert relative_error(run.out["gradient"], grad) < TOL
    assert relative_error(run.out["input_t_gradient"], grad * run.x.numpy()) < TOL


def test_guided_backprop_and_deconvnet_equal_captum(run):
    assert relative_error(run.out["guided_backprop"], run.captum_from_value(GuidedBackprop)) < TOL
    assert relative_error(run.out["deconvnet"], run.captum_from_value(Deconvolution)) < TOL


def test_lrp_z_equals_input_times_gradient(run):
    """LRP-z with the bias is input x gradient on ReLU networks; with ReLU6 (mobilenetv2) input x the
    gradient that takes output / input as the activation's derivative (see Run.ratio_gradient)."""
    assert relative_error(run.out["lrp.z"], run.ratio_gradient() * run.x.numpy()) < 1e-4  # divides by z, which is near 0 somewhere


def test_pattern_net_with_the_weights_is_the_gradient_times_the_value(run):
    expected = run.gradient() * run.value.numpy().reshape(-1, *[1] * (run.x.dim() - 1))
    assert relative_error(run.out["pattern.net"], expected) < TOL


# Captum's LRP on the sequential architectures (it does not handle residual adds or torch.cat: see
# tests/test_lrp_captum.py). z_plus_fast only where no BatchNorm is folded into a conv (Captum keeps it a
# layer of its own, which changes what z+ sees; epsilon is the same either way).
CAPTUM_CASES = [("vgg16", "legacy", "lrp.epsilon"), ("vgg16", "dynamo", "lrp.epsilon"),
                ("timeseries1d", "legacy", "lrp.epsilon"), ("timeseries1d", "dynamo", "lrp.epsilon"),
                ("vgg16", "legacy", "lrp.z_plus_fast"), ("vgg16", "dynamo", "lrp.z_plus_fast")]
CAPTUM_RULES = {"lrp.epsilon": lambda: EpsilonRule(epsilon=1e-7),
                "lrp.z_plus_fast": lambda: Alpha1_Beta0_Rule(set_bias_to_zero=True)}


@pytest.mark.parametrize("name, exporter, method", CAPTUM_CASES)
def test_lrp_equals_captum_on_sequential_architectures(name, exporter, method):
    run = get_run(name, exporter)
    net = archs.twin(name).double()
    for m in net.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            m.rule = CAPTUM_RULES[method]()
        elif isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten,
                            nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout)):
            m.rule = EpsilonRule(epsilon=1e-7)
    want = LRP(net).attribute(run.x.double(), target=run.index).detach().numpy()
    # float32 against float64: z+ divides by sums of positive contributions of signed inputs
    assert relative_error(run.out[method], want) < (1e-4 if method == "lrp.epsilon" else 5e-4)


def test_every_method_gives_finite_output(run):
    assert len(run.methods) == (len(COMPILED) if run.exporter == "legacy" else len(ORACLE_METHODS))
    for method in run.methods:
        out = run.out[method.name]
        assert out.shape == tuple(run.x.shape) and np.isfinite(out).all(), method.name
        assert np.abs(out).max() > 0, method.name


# ---------------------------------------------------------------------------- a Keras model (tf2onnx)

KERAS = archs.ARCH_DIR / "keras_cnn.onnx"  # models/keras_convert.py: NHWC input, a Transpose first


def test_keras_model_converted_by_tf2onnx():
    """The conversion against the Keras logits; the compiled gradient against float64 central finite
    differences of the converted graph (onnx.reference) along random directions; every method finite."""
    from test_fuzz import as_float64
    from onnx.reference import ReferenceEvaluator

    ref = np.load(archs.ARCH_DIR / "keras_cnn_ref.npz")
    x = ref["x"]
    proto = load(KERAS)
    assert proto.graph.node[0].op_type == "Transpose"
    name_in, name_out = proto.graph.input[0].name, proto.graph.output[0].name
    # its Tanh layer: iNNvestigate's Deep Taylor (ReLU activations only) refuses it, as nnxplain's does
    refused = ["deep_taylor", "deep_taylor.bounded"]
    for method in refused:
        with pytest.raises(nnxplain.NnxplainError, match="Tanh.*Deep Taylor supports ReLU activations only"):
            nnxplain.compile(KERAS, [method], params={"low": -4.0, "high": 4.0} if "bounded" in method else {})
    methods = [load_method(m) for m in COMPILED if m not in refused]
    out = {}
    for group in (methods[i:i + GROUP] for i in range(0, len(methods), GROUP)):
        names = {m.name for m in group}
        params = {k: v for k, v in PARAMS.items() if k.rsplit(".", 1)[0] in names}
        model = nnxplain.compile(KERAS, group, params=params, patterns=stand_in_patterns(proto))
        sess = session(model)
        out.update(zip([o.name for o in model.graph.output], sess.run(None, {name_in: x, **noise_feeds(sess, x)})))
    assert relative_error(out[name_out], ref["logits"]) < TOL

    evaluator = ReferenceEvaluator(as_float64(onnx.load(str(KERAS))))
    index = ref["logits"].argmax(1)

    def selected(v):
        return float(evaluator.run(None, {name_in: v})[0][np.arange(len(v)), index].sum())

    rng = np.random.default_rng(0)
    grad, x64, eps = out["gradient"].astype(np.float64), x.astype(np.float64), 1e-6
    for _ in range(4):
        d = rng.normal(size=x.shape)
        fd = (selected(x64 + eps * d) - selected(x64 - eps * d)) / (2 * eps)
        assert abs((grad * d).sum() - fd) < 1e-4 * max(abs(fd), 1.0), ((grad * d).sum(), fd)
    for method in methods:
        result = out[method.name if method.name != name_in else f"{method.name}_explanation"]
        assert result.shape == x.shape and np.isfinite(result).all() and np.abs(result).max() > 0, method.name


# ---------------------------------------------------------------------------- partly supported


def test_squeeze_excite_support_names_what_does_not_apply_and_the_rest_is_correct():
    """A squeeze-and-excitation gate multiplies two computed tensors: the LRP methods give each operand
    half of the gate's relevance (the uniform rule), and their relevance-form rules agree with
    attn_lrp's gradient-times-input form there; Deep Taylor (iNNvestigate's, w^2 at a scale) is named
    as not applicable with the node and the reason; the gradient methods equal torch autograd and Captum."""
    import subprocess
    import sys
    path = archs.path("squeeze_excite")
    result = subprocess.run([sys.executable, "-m", "nnxplain", "support", str(path)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("methods:\n", 1)[1].splitlines()
    verdict = {line.split()[0]: line for line in lines}
    assert len(verdict) == len(available())
    refused = sorted(m for m in verdict if "not applicable" in verdict[m])
    assert refused == ["deep_taylor", "deep_taylor.bounded"]
    for m in refused:
        assert "not applicable: node '/Mul' (Mul): the w^2 rule on Mul needs one computed operand and a constant" \
            in verdict[m], verdict[m]
    assert all(" applicable" in verdict[m] for m in verdict)

    explainer = nnxplain.compile(path, ["lrp.z", "attn_lrp"])
    x0 = np.random.default_rng(5).normal(size=(3, 3, 32, 32)).astype(np.float32)
    lrp_z, attn = session(explainer).run(["lrp.z", "attn_lrp"], {"input": x0})
    assert relative_error(lrp_z, attn) < TOL

    net = archs.twin("squeeze_excite")
    torch.manual_seed(5)
    x = torch.randn(3, 3, 32, 32)
    model = nnxplain.compile(path, ["gradient", "guided_backprop", "deconvnet"])
    out = dict(zip([o.name for o in model.graph.output], session(model).run(None, {"input": x.numpy()})))
    with torch.no_grad():
        y = net(x)
    assert relative_error(out["logits"], y.numpy()) < TOL
    index, value = y.argmax(1), y.max(1).values[:, None]
    xg = x.clone().requires_grad_(True)
    net(xg).gather(1, index[:, None]).sum().backward()
    assert relative_error(out["gradient"], xg.grad.numpy()) < TOL

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, v):
            return self.net(v) * value

    for name, cls in [("guided_backprop", GuidedBackprop), ("deconvnet", Deconvolution)]:
        want = cls(Scaled()).attribute(x.clone(), target=index).detach().numpy()
        assert relative_error(out[name], want) < TOL, name
