"""Every gradient-family method on every zoo model equals an independent implementation on the same
weights: torch autograd for gradients, Captum for Guided Backprop and Deconvnet."""
import numpy as np
import pytest
import torch
from captum.attr import Deconvolution, GuidedBackprop

import nnxplain
from models import zoo
from nnxplain.runtime import session

from conftest import ZOO_DIR, relative_error

MODELS = sorted(zoo.MODELS)
TOL = 1e-5


class Oracle:
    """The torch twin of a zoo model, a random batch, and the selected neuron of each sample."""

    def __init__(self, name, batch=4):
        self.path = ZOO_DIR / f"{name}.onnx"
        self.net = zoo.twin(name)
        torch.manual_seed(7)
        self.x = torch.randn(batch, *zoo.MODELS[name][1])
        with torch.no_grad():
            self.y = self.net(self.x)
        self.index = self.y.argmax(1)
        self.value = self.y.gather(1, self.index[:, None])

    def gradient(self, index=None):
        x = self.x.clone().requires_grad_(True)
        index = self.index if index is None else index
        out = self.net(x).gather(1, index[:, None]).sum()
        return torch.autograd.grad(out, x)[0].numpy()

    def from_value(self, captum_cls):
        """Captum's attribution started from the selected output's value (iNNvestigate's convention)."""
        value = self.value

        class Scaled(torch.nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x):
                return self.net(x) * value

        return captum_cls(Scaled(self.net)).attribute(self.x.clone(), target=self.index).detach().numpy()


def run(path, methods, x, **kwargs):
    model = nnxplain.compile(path, methods, **kwargs)
    names = [o.name for o in model.graph.output]
    outputs = session(model).run(None, {"input": x.numpy()})
    return dict(zip(names, outputs))


@pytest.fixture(scope="module", params=MODELS)
def oracle(request):
    return Oracle(request.param)


def test_gradient_equals_torch_autograd(oracle):
    out = run(oracle.path, ["gradient"], oracle.x)
    assert relative_error(out["logits"], oracle.y.numpy()) < TOL
    assert relative_error(out["gradient"], oracle.gradient()) < TOL


@pytest.mark.parametrize("post, fn", [("abs", np.abs), ("square", np.square)])
def test_gradient_postprocess(oracle, post, fn):
    out = run(oracle.path, ["gradient"], oracle.x, params={"postprocess": post})
    assert relative_error(out["gradient"], fn(oracle.gradient())) < TOL


def test_input_times_gradient(oracle):
    out = run(oracle.path, ["input_t_gradient"], oracle.x)
    assert relative_error(out["input_t_gradient"], oracle.gradient() * oracle.x.numpy()) < TOL


def test_guided_backprop_equals_captum(oracle):
    out = run(oracle.path, ["guided_backprop"], oracle.x)
    assert relative_error(out["guided_backprop"], oracle.from_value(GuidedBackprop)) < TOL


def test_deconvnet_equals_captum(oracle):
    out = run(oracle.path, ["deconvnet"], oracle.x)
    assert relative_error(out["deconvnet"], oracle.from_value(Deconvolution)) < TOL


def test_index_selection_explains_the_given_neuron():
    oracle = Oracle("lenet_bn")
    neuron = np.array([3, 0, 9, 3], np.int64)
    model = nnxplain.compile(oracle.path, ["gradient"], neuron_selection="index")
    grad = session(model).run(["gradient"], {"input": oracle.x.numpy(), "neuron": neuron})[0]
    assert relative_error(grad, oracle.gradient(torch.from_numpy(neuron))) < TOL


def test_all_selection_explains_the_sum_of_outputs():
    oracle = Oracle("resnet")
    x = oracle.x.clone().requires_grad_(True)
    expected = torch.autograd.grad(oracle.net(x).sum(), x)[0].numpy()
    out = run(oracle.path, ["gradient"], oracle.x, neuron_selection="all")
    assert relative_error(out["gradient"], expected) < TOL


def test_methods_compiled_together_share_one_forward_pass():
    alone = nnxplain.compile(ZOO_DIR / "resnet.onnx", ["gradient"])
    together = nnxplain.compile(ZOO_DIR / "resnet.onnx", ["gradient", "guided_backprop", "deconvnet"])
    backward = ("gradient/", "guided_backprop/", "deconvnet/")  # the nodes a method emits are named after it
    convs = lambda m: sum(n.op_type == "Conv" and not n.name.startswith(backward) for n in m.graph.node)  # forward convs
    assert convs(together) == convs(alone) > 0
    assert [o.name for o in together.graph.output] == ["logits", "gradient", "guided_backprop", "deconvnet"]


def test_input_and_random_baselines():
    x = torch.randn(6, 1, 16, 16)
    out = run(ZOO_DIR / "lenet_bn.onnx", ["input", "random"], x)
    assert np.array_equal(out["input_explanation"], x.numpy())  # the model's input is already named "input"
    noise = out["random"]
    assert noise.shape == x.shape and abs(noise.mean()) < 0.1 and abs(noise.std() - 1) < 0.1
    again = run(ZOO_DIR / "lenet_bn.onnx", ["random"], x)["random"]
    assert np.array_equal(noise, again), "the same seed gives the same noise"


def test_explanations_keep_dynamic_batch_and_input_shape():
    model = nnxplain.compile(ZOO_DIR / "conv1d.onnx", ["gradient"])
    out = {o.name: o for o in model.graph.output}["gradient"]
    dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert dims == ["batch", 4, 32]
    assert out.type.tensor_type.elem_type == 1  # float32
    for batch in (1, 3):
        grad = session(model).run(["gradient"], {"input": np.zeros((batch, 4, 32), np.float32)})[0]
        assert grad.shape == (batch, 4, 32)


def test_analyzer_api_matches_compiled_graph(tmp_path):
    oracle = Oracle("digits_cnn")
    analyzer = nnxplain.create_analyzer("gradient", str(oracle.path))
    assert relative_error(analyzer.analyze(oracle.x.numpy()), oracle.gradient()) < TOL
    indexed = nnxplain.create_analyzer("gradient", str(oracle.path), neuron_selection_mode="index")
    expected = oracle.gradient(torch.full((4,), 2, dtype=torch.long))
    assert relative_error(indexed.analyze(oracle.x.numpy(), neuron_selection=2), expected) < TOL
    analyzer.save(tmp_path / "explainer.onnx")
    saved = session(str(tmp_path / "explainer.onnx")).run(["gradient"], {"input": oracle.x.numpy()})[0]
    assert relative_error(saved, oracle.gradient()) < TOL
