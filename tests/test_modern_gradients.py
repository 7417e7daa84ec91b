"""The gradient family on today's architectures (issue 11): every model of the modern zoo
(models/modern.py: vision transformers, windowed attention, ConvNeXt, squeeze-excite and HardSwish
CNNs, a U-Net, BERT and a GPT-2 causal LM), exported by either of torch's exporters, compiled with
nnxplain, gives the explanations that torch autograd and Captum give on the same weights, to float32
precision. The text models are explained at their word embeddings (the explained position of GPT-2's
[batch, seq, vocab] logits: the last), with Captum's layer methods on the embedding layer as oracles.

The oracles: torch autograd for gradient and input times gradient, Captum's IntegratedGradients
(riemann_right, the reference 0) for integrated_gradients, Captum's NoiseTunnel over Saliency with
the same noise for smoothgrad, Captum's GuidedBackprop and Deconvolution (started from the selected
output's value, iNNvestigate's convention) where the network's nonlinearities are ReLUs.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import (Deconvolution, GuidedBackprop, IntegratedGradients, LayerGradientXActivation,
                         LayerIntegratedGradients, Saliency)

import nnxplain
from models import modern
from nnxplain.runtime import session
from nnxplain.sampling import noise

from conftest import relative_error

TOL = 1e-5
IMAGE_MODELS = sorted(set(modern.BUILDERS) - modern.TEXT)
EXPORTERS = {"legacy": "", "dynamo": ".dynamo"}
RELU_NETWORKS = {"regnet", "unet"}  # every nonlinearity a ReLU: Guided Backprop and Deconvnet apply
STEPS, SAMPLES, NOISE_SCALE, NOISE_SEED = 8, 4, 0.2, 3


class Flat(torch.nn.Module):
    """The model's output as [batch, scores] (a U-Net's [batch, classes, H, W] map flattened, as
    nnxplain's neuron selection sees it), optionally times a constant per sample."""

    def __init__(self, net, scale=None):
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x):
        y = self.net(x).flatten(1)
        return y if self.scale is None else y * self.scale


@pytest.fixture(scope="module", params=IMAGE_MODELS)
def oracle(request):
    name = request.param
    net = Flat(modern.build(name))
    x = torch.from_numpy(modern.example_inputs(name)["input"])
    with torch.no_grad():
        y = net(x)
    index = y.argmax(1)
    x_grad = x.clone().requires_grad_(True)
    gradient = torch.autograd.grad(net(x_grad).gather(1, index[:, None]).sum(), x_grad)[0].numpy()
    unit = noise((SAMPLES,) + tuple(x.shape), seed=NOISE_SEED)
    noisy = x[None] + NOISE_SCALE * torch.from_numpy(unit)  # [samples, batch, ...], sample-major as the graph
    smooth = np.mean([Saliency(net).attribute(sample, target=index, abs=False).numpy() for sample in noisy], axis=0)
    expected = {
        "gradient": gradient,
        "input_t_gradient": gradient * x.numpy(),
        "integrated_gradients": IntegratedGradients(net).attribute(
            x, baselines=0.0, target=index, n_steps=STEPS, method="riemann_right").detach().numpy(),
        "smoothgrad": smooth,
    }
    if name in RELU_NETWORKS:
        value = y.gather(1, index[:, None])
        for method, captum_cls in (("guided_backprop", GuidedBackprop), ("deconvnet", Deconvolution)):
            expected[method] = captum_cls(Flat(net.net, value)).attribute(x.clone(), target=index).detach().numpy()
    return name, x.numpy(), unit, expected


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_the_gradient_family_equals_torch_and_captum(oracle, exporter):
    name, x, unit, expected = oracle
    params = {"integrated_gradients.steps": STEPS, "smoothgrad.augment_by_n": SAMPLES,
              "smoothgrad.noise_scale": NOISE_SCALE, "smoothgrad.noise": "input"}
    model = nnxplain.compile(modern.MODERN_DIR / f"{name}{EXPORTERS[exporter]}.onnx", list(expected), params=params)
    run = session(model)
    names = [o.name for o in run.get_outputs()]
    got = dict(zip(names, run.run(None, {"input": x, "smoothgrad/noise": unit})))
    errors = {method: relative_error(got[method], want) for method, want in expected.items()}
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", sorted(modern.TEXT))
def test_text_models_equal_captums_layer_methods_at_the_word_embeddings(name, exporter):
    """gradient and input_t_gradient per embedding dimension, integrated_gradients per token from the
    pad token's embedding: torch autograd, LayerGradientXActivation and LayerIntegratedGradients on the
    word embedding layer, for each sample's largest score (GPT-2: at the last position)."""
    net = modern.build(name)
    feeds = modern.example_inputs(name)
    inputs = tuple(torch.from_numpy(v) for v in feeds.values())

    def scores(*args):
        logits = net(*args)
        return logits[:, -1] if logits.ndim == 3 else logits
    with torch.no_grad():
        index = scores(*inputs).argmax(1)
    layer = net.model.get_input_embeddings()
    gradient = LayerGradientXActivation(scores, layer, multiply_by_inputs=False).attribute(inputs, target=index)
    reference = (torch.zeros_like(inputs[0]), *inputs[1:])  # token 0, the pad token
    expected = {
        "gradient/per_dimension": gradient.detach().numpy(),
        "input_t_gradient/per_dimension": LayerGradientXActivation(scores, layer).attribute(inputs, target=index)
                                                                                 .detach().numpy(),
        "integrated_gradients": LayerIntegratedGradients(scores, layer).attribute(
            inputs, baselines=reference, target=index, n_steps=STEPS, method="riemann_right").sum(-1).detach().numpy(),
    }
    model = nnxplain.compile(modern.MODERN_DIR / f"{name}{EXPORTERS[exporter]}.onnx",
                             ["gradient", "input_t_gradient", "integrated_gradients"], per_dimension=True,
                             params={"integrated_gradients.steps": STEPS, "integrated_gradients.reference_token": 0})
    run = session(model)
    got = dict(zip([o.name for o in run.get_outputs()], run.run(None, feeds)))
    errors = {key: relative_error(got[key], want) for key, want in expected.items()}
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_the_bert_command_line_writes_a_token_heatmap(exporter, tmp_path, capsys):
    """`nnxplain analyze bert.onnx --method integrated_gradients --input tokens.npz -o tokens.html` on a
    model with int64 ids: the heatmap holds every attended token's relevance, which is Captum's
    LayerIntegratedGradients (from the reference token 0, as the command line is given it)."""
    from nnxplain.cli import main
    feeds = modern.example_inputs("bert")
    np.savez(tmp_path / "tokens.npz", **feeds)
    path = modern.MODERN_DIR / f"bert{EXPORTERS[exporter]}.onnx"
    common = ["analyze", str(path), "--method", "integrated_gradients", "--input", str(tmp_path / "tokens.npz"),
              "-p", "reference_token=0", "-p", f"steps={STEPS}"]
    assert main(common + ["-o", str(tmp_path / "tokens.html")]) == 0
    assert main(common + ["-o", str(tmp_path / "tokens.npy")]) == 0
    html = (tmp_path / "tokens.html").read_text()
    relevance = np.load(tmp_path / "tokens.npy")
    assert relevance.shape == feeds["input_ids"].shape
    net = modern.build("bert")
    inputs = tuple(torch.from_numpy(v) for v in feeds.values())
    with torch.no_grad():
        index = net(*inputs).argmax(1)
    expected = LayerIntegratedGradients(net, net.model.get_input_embeddings()).attribute(
        inputs, baselines=(torch.zeros_like(inputs[0]), *inputs[1:]), target=index, n_steps=STEPS,
        method="riemann_right").sum(-1).detach().numpy()
    assert relative_error(relevance, expected) < TOL
    attended = int(feeds["attention_mask"].sum())
    assert html.count('title="') >= attended  # one hover value per attended token
