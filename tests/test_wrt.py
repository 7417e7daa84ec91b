"""What is explained (`wrt`), and sampling methods on the models they used to refuse: several float
inputs (the first, or the one `wrt` names, is explained; the others are held fixed for every sample)
and inputs with dynamic dims after the batch ([N, 3, 'H', 'W']). Oracles: Captum and torch autograd."""
import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

import nnxplain
from nnxplain.cli import main
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


class DynamicImage(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 5)
        with torch.no_grad():  # tanh well into its curve: gradients that vary with the noise (vargrad)
            self.conv.weight *= 3

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    net = TwoInputs().eval()
    path = tmp_path_factory.mktemp("wrt") / "two_inputs.onnx"
    torch.onnx.export(net, (torch.randn(1, 6), torch.randn(1, 4)), str(path), dynamo=False, opset_version=17,
                      input_names=["signal", "state"], output_names=["y"],
                      dynamic_axes={"signal": {0: "N"}, "state": {0: "N"}, "y": {0: "N"}})
    return net, path


@pytest.fixture(scope="module")
def dynamic_image(tmp_path_factory):
    net = DynamicImage().eval()
    path = tmp_path_factory.mktemp("dynamic") / "dynamic.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 6, 6),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}, "y": {0: "N"}})
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


def image(h, w, n=2):
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(h * 100 + w))


@pytest.mark.parametrize("size", [(6, 6), (5, 9)])
def test_integrated_gradients_with_dynamic_spatial_dims(dynamic_image, size):
    net, path = dynamic_image
    x = image(*size)
    expected = IntegratedGradients(net).attribute(x, target=net(x).argmax(1), n_steps=10, method="riemann_right")
    out, _ = run(path, "integrated_gradients", {"x": x}, params={"steps": 10, "chunk": 4})
    assert relative_error(out["integrated_gradients"], expected.detach().numpy()) < TOL


class SameNoise:
    """Captum's NoiseTunnel with the graph's noise: it repeats each input n times (batch-major);
    our noise is sample-major, [n, batch, ...]."""

    def __init__(self, monkeypatch, unit_noise):
        def add_noise(input, stdev, n):
            moved = torch.from_numpy(unit_noise).transpose(0, 1).reshape(input.shape[0] * n, *input.shape[1:])
            return input.repeat_interleave(n, dim=0) + stdev * moved
        monkeypatch.setattr(NoiseTunnel, "_add_noise_to_input", staticmethod(add_noise))


@pytest.mark.parametrize("method, nt_type", [("smoothgrad", "smoothgrad"), ("vargrad", "vargrad")])
@pytest.mark.parametrize("source", ["graph", "input"])
def test_noise_methods_with_dynamic_spatial_dims(dynamic_image, monkeypatch, method, nt_type, source):
    """The in-graph generator reads the dims at run time and draws what it draws for static dims."""
    net, path = dynamic_image
    x = image(5, 7)
    unit = noise((6,) + tuple(x.shape), seed=4)
    SameNoise(monkeypatch, unit)
    expected = NoiseTunnel(Saliency(net)).attribute(x, nt_type=nt_type, nt_samples=6, stdevs=1.0,
                                                    target=net(x).argmax(1), abs=False)
    params = {"augment_by_n": 6, "noise_scale": 1.0, "seed": 4, "noise": source}
    feeds = {"x": x} if source == "graph" else {"x": x, f"{method}/noise": torch.from_numpy(unit)}
    out, _ = run(path, method, feeds, params=params)
    assert relative_error(out[method], expected.detach().numpy()) < TOL


def test_random_with_dynamic_dims_draws_the_static_numbers(dynamic_image):
    _, path = dynamic_image
    out, _ = run(path, "random", {"x": image(4, 5)}, params={"seed": 3})
    expected = noise((1, 1, 3, 4, 5), seed=3)[0]
    # the same numbers up to the engine's log and cos (an ulp or so; see nnxplain/noise.py)
    assert relative_error(out["random"], np.broadcast_to(expected, (2, 3, 4, 5))) < 1e-6


def test_support_lists_every_method_on_a_model_with_dynamic_dims(dynamic_image, capsys):
    _, path = dynamic_image
    code = main(["support", str(path)])
    listed = capsys.readouterr().out.split("methods:")[1]
    from nnxplain.methods import available
    for name in available():
        assert f"  {name} " in listed
    for name in ("integrated_gradients", "smoothgrad", "vargrad", "gradient", "random"):
        assert f"  {name} " in listed and "applicable" in listed.split(f"  {name} ")[1].splitlines()[0]
        assert "not applicable" not in listed.split(f"  {name} ")[1].splitlines()[0]
    assert code == 0


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
