"""Inputs with dynamic dims after the batch ([N, 3, 'H', 'W']): the sampling methods read the dims at
run time (the in-graph noise too), the gradient of a strided Conv fits its transpose to the input's
run-time size, and `nnxplain support` lists every method. Oracles: Captum and torch autograd."""
import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

import nnxplain
from nnxplain.cli import main
from nnxplain.runtime import session
from nnxplain.sampling import noise

from conftest import relative_error

TOL = 1e-5


class DynamicImage(torch.nn.Module):
    """A stride-1 and a stride-2 Conv, for images of any size."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.down = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.head = torch.nn.Linear(4, 5)
        with torch.no_grad():  # tanh well into its curve: gradients that vary with the noise (vargrad)
            self.conv.weight *= 3

    def forward(self, x):
        return self.head(torch.tanh(self.down(torch.tanh(self.conv(x)))).mean((2, 3)))


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


class StridedConv(torch.nn.Module):
    def __init__(self, *conv_args, **conv_kwargs):
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv2d(*conv_args, **conv_kwargs)

    def forward(self, x):
        return torch.tanh(self.conv(x)).sum((2, 3))


@pytest.mark.parametrize("kernel, stride, pad, dilation", [(3, 2, 1, 1), (2, 3, 0, 1), (3, 2, 0, 2), (4, 3, 2, 1)])
def test_the_gradient_of_a_strided_conv_fits_the_run_time_size(tmp_path, kernel, stride, pad, dilation):
    """Sizes where the last window ends before the input does (the rest gets zero gradient) and
    where it reaches into the end padding: the transpose is cut or zero-extended at run time."""
    net = StridedConv(2, 3, kernel, stride=stride, padding=pad, dilation=dilation).eval()
    path = tmp_path / "strided.onnx"
    torch.onnx.export(net, (torch.randn(1, 2, 11, 11),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}, "y": {0: "N"}})
    model = nnxplain.compile(path, ["gradient"], neuron_selection="all")
    sess = session(model)
    for size in [(9, 10), (12, 13), (14, 8)]:
        x = torch.randn(2, 2, *size, requires_grad=True)
        net(x).sum().backward()
        (out,) = sess.run(["gradient"], {"x": x.detach().numpy()})
        assert relative_error(out, x.grad.numpy()) < TOL, size


class Pooled(torch.nn.Module):
    """A Conv, then a pool, then Flatten: with dynamic spatial dims the output's second dim is named
    by no input (the explainer declares it unnamed)."""

    def __init__(self, pool):
        super().__init__()
        torch.manual_seed(2)
        self.conv, self.pool = torch.nn.Conv2d(2, 3, 3), pool

    def forward(self, x):
        return self.pool(torch.tanh(self.conv(x))).flatten(1)


POOLS = {
    "avg_k3_s2_p1": torch.nn.AvgPool2d(3, 2, padding=1, count_include_pad=False),
    "avg_k3_s2_p1_with_pads": torch.nn.AvgPool2d(3, 2, padding=1, count_include_pad=True),
    "avg_k2_s2": torch.nn.AvgPool2d(2, 2),
    "max_k3_s2_p1": torch.nn.MaxPool2d(3, 2, padding=1),
    "global_max": torch.nn.AdaptiveMaxPool2d(1),
    "global_avg": torch.nn.AdaptiveAvgPool2d(1),
}


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_pool_gradients_with_dynamic_spatial_dims(tmp_path, pool):
    net = Pooled(POOLS[pool]).eval()
    path = tmp_path / "pooled.onnx"
    torch.onnx.export(net, (torch.randn(1, 2, 9, 9),), str(path), dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}, "y": {0: "N", 1: "F"}})
    sess = session(nnxplain.compile(path, ["gradient"], neuron_selection="all"))
    for size in [(9, 10), (12, 7)]:
        x = torch.randn(2, 2, *size, generator=torch.Generator().manual_seed(size[0]), requires_grad=True)
        net(x).sum().backward()
        (out,) = sess.run(["gradient"], {"x": x.detach().numpy()})
        assert relative_error(out, x.grad.numpy()) < TOL, size
