"""DeepLIFT (rescale rule) equals Captum's DeepLift on the same weights, and sums to f(x) - f(reference)."""
import numpy as np
import pytest
import torch
from captum.attr import DeepLift

import nnxplain
from models import zoo
from nnxplain.runtime import session

from conftest import ZOO_DIR, relative_error


def batch(name):
    torch.manual_seed(0)
    return torch.randn(3, *zoo.MODELS[name][1])


def run(name, x, **params):
    model = nnxplain.compile(ZOO_DIR / f"{name}.onnx", ["deeplift"], params=params)
    return session(model).run(["deeplift"], {"input": x.numpy()})[0]


# ReLU networks at float32 precision; the MLP's sigmoid and tanh multipliers are difference quotients
# (y - y_ref) / (x - x_ref) whose float32 cancellation differs between the two implementations.
@pytest.mark.parametrize("name, tol", [("resnet", 1e-5), ("lenet_bn", 1e-5), ("digits_cnn", 1e-5), ("mlp", 1e-4)])
@pytest.mark.parametrize("reference", [0.0, 0.3])
def test_deeplift_equals_captum(name, tol, reference):
    net, x = zoo.twin(name), batch(name)
    target = net(x).argmax(1)
    expected = DeepLift(net).attribute(x, baselines=reference, target=target).detach().numpy()
    assert relative_error(run(name, x, reference_inputs=reference), expected) < tol


def test_deeplift_sums_to_the_difference_from_the_reference():
    net, x = zoo.twin("resnet"), batch("resnet")
    with torch.no_grad():
        y, y0 = net(x), net(torch.full_like(x, 0.3))
    index = y.argmax(1, keepdim=True)
    gap = (y.gather(1, index) - y0.gather(1, index)).squeeze(1).numpy()
    total = run("resnet", x, reference_inputs=0.3).reshape(len(x), -1).sum(1)
    assert relative_error(total, gap) < 1e-5


def test_deeplift_can_be_smoothed(tmp_path):
    """A sampling method over deeplift: every noisy copy gets its own reference pass."""
    (tmp_path / "smooth_deeplift.toml").write_text(
        'kind = "sampling"\nbase = "deeplift"\n[sampling]\ninputs = "noise"\nreduce = "mean"\n'
        '[params]\naugment_by_n = 3\nnoise_scale = 0.1\nseed = 0\n')
    x = batch("resnet").numpy()
    analyzer = nnxplain.create_analyzer(str(tmp_path / "smooth_deeplift.toml"), str(ZOO_DIR / "resnet.onnx"),
                                        neuron_selection_mode="index")
    out = analyzer.analyze(x, neuron_selection=1)
    plain = nnxplain.create_analyzer("deeplift", str(ZOO_DIR / "resnet.onnx"), neuron_selection_mode="index")
    from nnxplain.sampling import noise
    unit = noise((3,) + x.shape, 0)
    expected = np.mean([plain.analyze(x + 0.1 * unit[k], neuron_selection=1) for k in range(3)], axis=0)
    assert relative_error(out, expected) < 1e-5


@pytest.mark.parametrize("activation", [torch.nn.Softplus, torch.nn.ELU])
def test_deeplift_rescales_the_new_activations_as_captum(activation, tmp_path):
    """Softplus and Elu are activations by their records, so DeepLIFT applies its rescale rule there,
    as Captum's DeepLift does (the plain gradient times x - reference is 27-48% off here)."""
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(10, 16), activation(), torch.nn.Linear(16, 12), activation(),
                              torch.nn.Linear(12, 4)).double().eval()
    path = tmp_path / "net.onnx"
    torch.onnx.export(net.float(), (torch.randn(1, 10),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}})
    net = net.double()
    x = torch.randn(5, 10, dtype=torch.float64) * 2
    expected = DeepLift(net).attribute(x, baselines=0.3, target=net(x).argmax(1)).detach().numpy()
    model = nnxplain.compile(path, ["deeplift"], params={"reference_inputs": 0.3})
    assert {"Softplus", "Elu"} & {n.op_type for n in model.graph.node}
    actual = session(model).run(["deeplift"], {"input": x.float().numpy()})[0]
    assert relative_error(actual, expected) < 1e-5
