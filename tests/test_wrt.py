"""What is explained (`wrt`), and sampling methods on models with several float inputs: the first, or
the one `wrt` names, is explained; the others are held fixed for every sample. Oracles: Captum and
torch autograd."""
import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

import nnxplain
from nnxplain.errors import NnxplainError
from nnxplain.runtime import session
from nnxplain.sampling import noise

from conftest import relative_error

TOL = 1e-5


class TwoInputs(torch.nn.Module):
    """A signal and a state, mixed: the state is held fixed while the signal is explained."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.signal, self.state = torch.nn.Linear(6, 8), torch.nn.Linear(4, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, signal, state):
        return self.head(torch.tanh(self.signal(signal) * 0.5 + self.state(state)))


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    net = TwoInputs().eval()
    path = tmp_path_factory.mktemp("wrt") / "two_inputs.onnx"
    torch.onnx.export(net, (torch.randn(1, 6), torch.randn(1, 4)), str(path), dynamo=False, opset_version=17,
                      input_names=["signal", "state"], output_names=["y"],
                      dynamic_axes={"signal": {0: "N"}, "state": {0: "N"}, "y": {0: "N"}})
    return net, path


def run(path, method, feeds, **kwargs):
    model = nnxplain.compile(path, [method], **kwargs)
    names = [o.name for o in model.graph.output]
    return dict(zip(names, session(model).run(None, {k: v.numpy() for k, v in feeds.items()}))), model


def two_feeds():
    g = torch.Generator().manual_seed(2)
    return {"signal": torch.randn(3, 6, generator=g), "state": torch.randn(3, 4, generator=g)}


@pytest.mark.parametrize("wrt, held", [(None, "state"), ("signal", "state"), ("state", "signal")])
def test_integrated_gradients_explains_one_input_and_holds_the_other(two_inputs, wrt, held):
    net, path = two_inputs
    feeds = two_feeds()
    explained = wrt or "signal"  # default: the first float input
    target = net(feeds["signal"], feeds["state"]).argmax(1)

    def with_held(x, other):
        return net(x, other) if explained == "signal" else net(other, x)
    expected = IntegratedGradients(with_held).attribute(feeds[explained], additional_forward_args=(feeds[held],),
                                                        target=target, n_steps=12, method="riemann_right")
    out, model = run(path, "integrated_gradients", feeds, wrt=wrt, params={"steps": 12})
    name = "integrated_gradients" if wrt else "integrated_gradients/signal"  # a model's several inputs: by name
    assert relative_error(out[name], expected.detach().numpy()) < TOL
    assert [i.name for i in model.graph.input] == ["signal", "state"]


def test_gradient_by_wrt_explains_only_that_input(two_inputs):
    net, path = two_inputs
    feeds = two_feeds()
    target = net(feeds["signal"], feeds["state"]).argmax(1)
    expected = Saliency(lambda state: net(feeds["signal"], state)).attribute(feeds["state"], target=target, abs=False)
    out, model = run(path, "gradient", feeds, wrt="state")
    assert [o.name for o in model.graph.output] == ["y", "gradient"]
    assert relative_error(out["gradient"], expected.detach().numpy()) < TOL


def test_smoothgrad_on_two_inputs_holds_the_state(two_inputs, monkeypatch):
    """The same noise as the graph's (nnxplain.sampling.noise), added to the signal only."""
    net, path = two_inputs
    feeds = two_feeds()
    target = net(feeds["signal"], feeds["state"]).argmax(1)
    unit = noise((8, 3, 6), seed=0)
    grads = []
    for k in range(8):
        signal = (feeds["signal"] + 0.3 * torch.from_numpy(unit[k])).requires_grad_()
        net(signal, feeds["state"]).gather(1, target[:, None]).sum().backward()
        grads.append(signal.grad.numpy())
    out, _ = run(path, "smoothgrad", feeds, params={"augment_by_n": 8, "noise_scale": 0.3})
    assert relative_error(out["smoothgrad/signal"], np.mean(grads, axis=0)) < TOL


def test_wrt_naming_nothing_explainable_is_one_clear_error(two_inputs):
    _, path = two_inputs
    with pytest.raises(NnxplainError, match=r"wrt 'y' names no float input .*float inputs: signal, state"):
        nnxplain.compile(path, ["gradient"], wrt="y")


def test_embedding_options_on_a_float_input_are_refused(two_inputs):
    _, path = two_inputs
    with pytest.raises(NnxplainError, match="reference_token is for embeddings"):
        nnxplain.compile(path, ["integrated_gradients"], params={"reference_token": 0})
    with pytest.raises(NnxplainError, match="per_dimension is for embeddings"):
        nnxplain.compile(path, ["gradient"], per_dimension=True)


def test_a_smoothed_deeplift_reads_the_held_input_repeated(two_inputs, tmp_path):
    """DeepLIFT's reference pass inside a sampling block reads the state as the block repeats it: the
    smoothed method equals the mean of plain deeplift over the noisy signals, the state fixed."""
    _, path = two_inputs
    (tmp_path / "smooth_deeplift.toml").write_text(
        'description = "SmoothGrad over DeepLIFT"\nkind = "sampling"\nbase = "deeplift"\n'
        '[sampling]\ninputs = "noise"\nreduce = "mean"\n'
        '[params]\naugment_by_n = 4\nnoise_scale = 0.5\nseed = 2\nnoise = "input"\nreference_inputs = 0.0\n')
    feeds = two_feeds()
    unit = noise((4, 3, 6), seed=2)
    smoothed, _ = run(path, str(tmp_path / "smooth_deeplift.toml"),
                      {**feeds, "smooth_deeplift/noise": torch.from_numpy(unit)}, neuron_selection="all")
    noisy = {"signal": (feeds["signal"].numpy()[None] + 0.5 * unit).reshape(-1, 6),
             "state": np.tile(feeds["state"].numpy(), (4, 1))}
    plain = nnxplain.compile(path, ["deeplift"], neuron_selection="all", wrt="signal")  # the state as it is
    each = session(plain).run(["deeplift"], noisy)[0]
    assert relative_error(smoothed["smooth_deeplift/signal"], each.reshape(4, 3, 6).mean(0)) < TOL
