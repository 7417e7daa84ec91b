"""Small model zoo for nnxplain: tiny torch models, their ONNX exports, and torch twins.

Every model ends in raw logits (no softmax) and uses one activation module instance
per use (no reuse, no inplace), because Captum's GuidedBackprop / DeconvNet hook
nn.ReLU modules and a shared module would be hooked twice.

    python -m models.zoo          # writes models/<name>.onnx for every random-weight model
    python models/train_digits.py # trains and writes models/digits_cnn.onnx (+ .npz data)
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

MODELS_DIR = Path(__file__).resolve().parent
OPSET = 17
SEED = 0


# ---------------------------------------------------------------------------- models


class MatMulLinear(nn.Module):
    """Linear layer written as x @ W + b, so it exports MatMul + Add instead of Gemm."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out) / n_in**0.5)
        self.bias = nn.Parameter(torch.randn(n_out) * 0.1)

    def forward(self, x):
        return torch.matmul(x, self.weight) + self.bias


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(20, 32),  # Gemm
            nn.ReLU(),
            MatMulLinear(32, 32),  # MatMul + Add
            nn.LeakyReLU(0.1),
            nn.Linear(32, 16),  # Gemm
            nn.Tanh(),
            MatMulLinear(16, 16),  # MatMul + Add
            nn.Sigmoid(),
            nn.Linear(16, 5),  # Gemm
        )

    def forward(self, x):
        return self.net(x)


class LeNetBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1),  # 16x16
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(6, 12, 3, stride=2, padding=2),  # 5x5
            nn.BatchNorm2d(12),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),  # 3x3, overlapping windows
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(12 * 3 * 3, 32),
            nn.ReLU(),
            nn.Linear(32, 10),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """ResNet basic block; projection shortcut (1x1 conv + BN) when shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out),
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()  # after the residual Add

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.block1 = BasicBlock(8, 8)  # identity shortcut
        self.block2 = BasicBlock(8, 16, stride=2)  # strided projection shortcut
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(self.flatten(self.pool(x)))


class ConcatCNN(nn.Module):
    """Inception-style parallel branches + a DenseNet-style concat, then pooling."""

    def __init__(self):
        super().__init__()
        self.b1 = nn.Conv2d(3, 4, 1)
        self.b3 = nn.Conv2d(3, 4, 3, padding=1)
        self.b5 = nn.Conv2d(3, 4, 5, padding=2)
        self.bpool = nn.Sequential(
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
            nn.Conv2d(3, 4, 1),
        )
        self.relu1 = nn.ReLU()
        self.dense_conv = nn.Conv2d(16, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.avgpool = nn.AvgPool2d(2)  # count_include_pad default (True); no padding here anyway
        self.maxpool = nn.AdaptiveMaxPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16 + 8, 10)

    def forward(self, x):
        x = torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bpool(x)], dim=1)
        x = self.relu1(x)
        x = torch.cat([x, self.relu2(self.dense_conv(x))], dim=1)  # DenseNet step
        x = self.maxpool(self.avgpool(x))
        return self.fc(self.flatten(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear project, residual add."""

    def __init__(self, c: int, expand: int):
        super().__init__()
        h = c * expand
        self.expand = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.project(self.dw(self.expand(x)))


class MobileNetReLU6(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.block = InvertedResidual(8, expand=2)
        self.down = nn.Sequential(  # strided depthwise-separable block
            nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU6(),
            nn.Conv2d(8, 16, 1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU6(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.down(self.block(self.stem(x)))
        return self.fc(self.flatten(self.pool(x)))


class Conv1DNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(4, 8, 3, padding=1),  # 32
            nn.ReLU(),
            nn.Conv1d(8, 8, 3, padding=2, dilation=2),  # 32
            nn.ReLU(),
            nn.MaxPool1d(2),  # 16
            nn.Conv1d(8, 16, 3, stride=2, padding=1),  # 8
            nn.Tanh(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
            nn.Linear(16, 3),
        )

    def forward(self, x):
        return self.net(x)


class DigitsCNN(nn.Module):
    """Trained on sklearn's 8x8 digits by models/train_digits.py."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 32),
            nn.ReLU(),
            nn.Linear(32, 10),
        )

    def forward(self, x):
        return self.net(x)


# name -> (class, per-sample input shape)
MODELS: dict[str, tuple[type, tuple[int, ...]]] = {
    "mlp": (MLP, (20,)),
    "lenet_bn": (LeNetBN, (1, 16, 16)),
    "resnet": (ResNet, (3, 16, 16)),
    "concat_cnn": (ConcatCNN, (3, 16, 16)),
    "mobilenet_relu6": (MobileNetReLU6, (3, 16, 16)),
    "conv1d": (Conv1DNet, (4, 32)),
    "digits_cnn": (DigitsCNN, (1, 8, 8)),
}
TRAINED = {"digits_cnn"}  # weights come from train_digits.py, not from build()


# ---------------------------------------------------------------------------- build / export


def build(name: str) -> nn.Module:
    """Deterministic random-weight model in eval mode, with non-trivial BatchNorm stats."""
    cls, _ = MODELS[name]
    torch.manual_seed(SEED)
    model = cls()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                randomize_batchnorm(m)
    return model.eval()


def randomize_batchnorm(m: nn.Module):
    """Non-identity stats so BN folding is really tested; a few negative gammas so sign flips
    through the following ReLU are exercised too. (Call under torch.no_grad().)"""
    n = m.num_features
    sign = torch.where(torch.rand(n) < 0.25, -1.0, 1.0)
    m.weight.copy_(sign * torch.empty(n).uniform_(0.5, 1.5))
    m.bias.copy_(torch.empty(n).uniform_(-0.5, 0.5))
    m.running_mean.copy_(torch.empty(n).uniform_(-0.5, 0.5))
    m.running_var.copy_(torch.empty(n).uniform_(0.5, 2.0))


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def ort_run(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x.astype(np.float32)})[0]


def export(module: nn.Module, path, per_sample_shape, atol: float = 1e-5) -> onnx.ModelProto:
    """Export with the legacy (TorchScript) exporter and check it against torch."""
    module = module.eval()
    dummy = torch.randn(2, *per_sample_shape, generator=torch.Generator().manual_seed(SEED))
    with warnings.catch_warnings():  # the legacy exporter warns that it is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            dynamo=False,
            # No constant folding: otherwise the eval peephole pass fuses Conv+BN and
            # renames the fused initializers, and we want BatchNormalization in the graph.
            do_constant_folding=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    ops = {n.op_type for n in proto.graph.node}
    if has_batchnorm(module) and "BatchNormalization" not in ops:
        raise RuntimeError(f"{path}: BatchNorm was folded away by the exporter")
    # Batch of 3 (not the export batch of 2) also checks the dynamic batch axis.
    x = torch.randn(3, *per_sample_shape, generator=torch.Generator().manual_seed(SEED + 1))
    with torch.no_grad():
        want = module(x).numpy()
    got = ort_run(path, x.numpy())
    # rtol as well as atol: the trained digits model has logits ~10-30, where float32
    # kernels in ORT and torch differ by ~1e-5 in absolute terms.
    if not np.allclose(got, want, atol=atol, rtol=atol):
        raise RuntimeError(f"{path}: ORT differs from torch by {np.abs(got - want).max():.3g}")
    return proto


# ---------------------------------------------------------------------------- twin


# Input positions of each parameter for nodes that carry weights; used only when an
# initializer was not named after its state_dict key.
_NODE_PARAMS = {
    "Conv": {1: "weight", 2: "bias"},
    "ConvTranspose": {1: "weight", 2: "bias"},
    "Gemm": {1: "weight", 2: "bias"},
    "BatchNormalization": {1: "weight", 2: "bias", 3: "running_mean", 4: "running_var"},
}


def _onnx_tensors(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """All constant tensors by name: initializers and Constant node outputs."""
    out = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def _scope_name(qualname: str) -> str:
    """ONNX node scope the legacy exporter gives a submodule: 'block.expand.1' ->
    '/block/expand/expand.1' (each level is the name from its last non-numeric atom)."""
    atoms, levels = qualname.split("."), []
    for i in range(len(atoms)):
        j = i
        while j > 0 and atoms[j].isdigit():
            j -= 1
        levels.append(".".join(atoms[j : i + 1]))
    return "/" + "/".join(levels)


def _structural_names(model: nn.Module, proto: onnx.ModelProto, tensors: dict) -> dict[str, np.ndarray]:
    """state_dict key -> tensor, found through node names like '/net/net.0/Conv'."""
    module_of_scope = {_scope_name(q): q for q, _ in model.named_modules() if q}
    out = {}
    for n in proto.graph.node:
        params = _NODE_PARAMS.get(n.op_type)
        module = module_of_scope.get(n.name.rsplit("/", 1)[0])
        if not params or module is None:
            continue
        for i, attr in params.items():
            if i < len(n.input) and n.input[i] in tensors:
                value = tensors[n.input[i]]
                if n.op_type == "Gemm" and attr == "weight":
                    trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
                    value = value if trans_b else value.T  # torch stores (out, in)
                out[f"{module}.{attr}"] = value
    return out


def twin(name: str, onnx_path=None, builder=None) -> nn.Module:
    """The torch module with exactly the weights stored in the .onnx file (eval mode).
    builder(name) makes the module to fill (default: this zoo's build)."""
    path = Path(onnx_path) if onnx_path else MODELS_DIR / f"{name}.onnx"
    proto = onnx.load(str(path))
    tensors = _onnx_tensors(proto)
    model = (builder or build)(name)
    by_structure = _structural_names(model, proto, tensors)
    state = model.state_dict()
    new_state, missing = {}, []
    for key, ref in state.items():
        if key.endswith("num_batches_tracked"):  # not exported; unused in eval mode
            new_state[key] = ref
            continue
        value = tensors.get(key)
        if value is None:
            value = by_structure.get(key)
        if value is None or tuple(value.shape) != tuple(ref.shape):
            missing.append(key)
            continue
        new_state[key] = torch.from_numpy(np.array(value, dtype=np.float32))
    if missing:
        raise KeyError(f"{path}: no initializer found for {missing}")
    model.load_state_dict(new_state)
    return model.eval()


# ---------------------------------------------------------------------------- main


def twin_of(onnx_path) -> nn.Module:
    """The torch twin of a zoo model given by its file (`nnxplain bench --torch models.zoo:twin_of`)."""
    return twin(Path(onnx_path).stem, onnx_path)


def main():
    for name, (_, shape) in MODELS.items():
        if name in TRAINED:
            continue
        path = MODELS_DIR / f"{name}.onnx"
        proto = export(build(name), path, shape)
        ops = sorted({n.op_type for n in proto.graph.node})
        print(f"{name:16s} {path.stat().st_size:7d} B  {ops}")


if __name__ == "__main__":
    main()
