"""The architectures of the iNNvestigate paper's Fig. 1 at reduced width, plus a 1-D time-series model.

Each is exported twice, from the same seeded random weights:

- `models/archs/<name>.onnx`: torch's legacy (TorchScript) exporter, opset 17, BatchNormalization kept;
- `models/archs/<name>.dynamo.onnx` (+ `.dynamo.onnx.data`): the dynamo exporter, which writes other op
  patterns (ReduceMean for global pooling, Reshape for Flatten, BatchNormalization folded into the
  Conv by its optimizer, Clip with input bounds, opset 18) and its weights as external data.

    python -m models.archs           # writes both exports of every architecture

`twin(name)` is the torch module with the weights read from the legacy file (as `zoo.twin`); the
dynamo file holds the same model (checked against torch at export and in tests/test_architectures.py).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from . import zoo

ARCH_DIR = Path(__file__).resolve().parent / "archs"
SEED = 0


def conv_bn(c_in, c_out, k, stride=1, groups=1, act=nn.ReLU):
    layers = [nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


# ---------------------------------------------------------------------------- VGG-16


class VGG16Style(nn.Module):
    """VGG-16's layout (13 3x3 convs in 5 blocks with max pooling, 3 dense layers with dropout), narrow."""

    CFG = [8, 8, "M", 16, 16, "M", 16, 16, 16, "M", 32, 32, 32, "M", 32, 32, 32, "M"]

    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for v in self.CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32, 32), nn.ReLU(), nn.Dropout(), nn.Linear(32, 32),
                                        nn.ReLU(), nn.Dropout(), nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


# ---------------------------------------------------------------------------- ResNet-50


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4), BN after each; projection shortcut where the shape changes."""

    def __init__(self, c_in, width, stride=1):
        super().__init__()
        c_out = width * 4
        self.conv1 = conv_bn(c_in, width, 1)
        self.conv2 = conv_bn(width, width, 3, stride=stride)
        self.conv3 = conv_bn(width, c_out, 1, act=None)
        self.shortcut = conv_bn(c_in, c_out, 1, stride=stride, act=None) if stride != 1 or c_in != c_out else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class ResNet50Style(nn.Module):
    """ResNet-50's layout: 7x7/2 stem, 3x3/2 max pool, four stages of bottleneck blocks (here 2-1-1-1
    blocks instead of 3-4-6-3, width 4-8-8-16 instead of 64-128-256-512), global average pool, dense."""

    def __init__(self, stem=8, widths=(4, 8, 8, 16), blocks=(2, 1, 1, 1), classes=10):
        """ResNet50Style(64, (64, 128, 256, 512), (3, 4, 6, 3), 1000) is ResNet-50 itself."""
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(stem),
                                  nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
        layers, c = [], stem
        for width, n, stride in zip(widths, blocks, (1, 2, 2, 2)):
            for i in range(n):
                layers.append(Bottleneck(c, width, stride if i == 0 else 1))
                c = width * 4
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.blocks(self.stem(x)))))


# ---------------------------------------------------------------------------- DenseNet


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv-BN-ReLU-3x3 conv (pre-activation), its output concatenated to its input."""

    def __init__(self, c_in, growth):
        super().__init__()
        self.bn1, self.relu1 = nn.BatchNorm2d(c_in), nn.ReLU()
        self.conv1 = nn.Conv2d(c_in, 2 * growth, 1, bias=False)
        self.bn2, self.relu2 = nn.BatchNorm2d(2 * growth), nn.ReLU()
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.conv2(self.relu2(self.bn2(self.conv1(self.relu1(self.bn1(x))))))
        return torch.cat([x, y], 1)


class DenseNetStyle(nn.Module):
    """DenseNet's layout: stem, dense blocks (every layer sees the concatenation of all before it),
    transitions (BN-ReLU-1x1 conv-2x2 average pool), final BN-ReLU, global average pool, dense."""

    def __init__(self, growth=4):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        c, layers = 8, []
        for block in range(2):
            for _ in range(3):
                layers.append(DenseLayer(c, growth))
                c += growth
            if block == 0:
                layers.append(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False),
                                            nn.AvgPool2d(2)))
                c //= 2
        self.features = nn.Sequential(*layers)
        self.final = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.final(self.features(self.stem(x))))))


# ---------------------------------------------------------------------------- Inception


class InceptionModule(nn.Module):
    """GoogLeNet's module: 1x1 | 1x1-3x3 | 1x1-5x5 | 3x3 max pool-1x1, concatenated."""

    def __init__(self, c_in, c1, c3r, c3, c5r, c5, cp):
        super().__init__()
        self.b1 = conv_bn(c_in, c1, 1)
        self.b3 = nn.Sequential(conv_bn(c_in, c3r, 1), conv_bn(c3r, c3, 3))
        self.b5 = nn.Sequential(conv_bn(c_in, c5r, 1), conv_bn(c5r, c5, 5))
        self.bp = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), conv_bn(c_in, cp, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)


class InceptionStyle(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 3, stride=2), nn.MaxPool2d(3, stride=2, padding=1))  # 8x8
        self.inc1 = InceptionModule(8, 4, 4, 8, 2, 4, 4)  # 20 channels
        self.inc2 = InceptionModule(20, 8, 4, 8, 2, 4, 4)  # 24
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)  # 4x4
        self.inc3 = InceptionModule(24, 8, 8, 8, 4, 4, 4)  # 24
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(0.4)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = self.inc3(self.pool(self.inc2(self.inc1(self.stem(x)))))
        return self.fc(self.dropout(self.flatten(self.avg(x))))


# ---------------------------------------------------------------------------- MobileNetV2


class InvertedResidualV2(nn.Module):
    def __init__(self, c_in, c_out, stride, expand):
        super().__init__()
        h = c_in * expand
        layers = [conv_bn(c_in, h, 1, act=nn.ReLU6)] if expand != 1 else []
        layers += [conv_bn(h, h, 3, stride=stride, groups=h, act=nn.ReLU6), conv_bn(h, c_out, 1, act=None)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2Style(nn.Module):
    """MobileNetV2's layout: 3x3/2 stem, inverted residual blocks (expand 1x1 ReLU6, depthwise 3x3
    ReLU6, linear 1x1 projection, residual add where the shape is kept), 1x1 head, pool, dense."""

    SETTINGS = [(1, 8, 1, 1), (4, 8, 2, 2), (4, 16, 2, 2), (4, 16, 1, 1)]  # expand, channels, repeats, stride

    def __init__(self):
        super().__init__()
        layers, c = [conv_bn(3, 8, 3, stride=2, act=nn.ReLU6)], 8
        for t, out, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidualV2(c, out, s if i == 0 else 1, t))
                c = out
        layers.append(conv_bn(c, 32, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.dropout(self.flatten(self.pool(self.features(x)))))


# ---------------------------------------------------------------------------- NASNet


class SepConv(nn.Module):
    """NASNet's separable convolution: (ReLU,) depthwise kxk, pointwise 1x1, BN, twice. The first ReLU
    is the cell's, applied once to each state: several ReLU modules on one tensor would be merged into
    one node by the exporter, and Guided Backprop on one ReLU differs from it on two."""

    def __init__(self, c, k):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=False), nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(), nn.Conv2d(c, c, k, padding=k // 2, groups=c, bias=False), nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c))

    def forward(self, x):
        return self.body(x)


class NASNetCell(nn.Module):
    """A NASNet-A normal cell: five pairwise adds of separable convs, pooling and identities over the
    current and previous hidden states, the five sums concatenated (with the previous state)."""

    def __init__(self, c_prev, c_cur, c):
        super().__init__()
        # the inputs arrive after a ReLU (the network applies one per state)
        self.prep_prev = nn.Sequential(nn.Conv2d(c_prev, c, 1, bias=False), nn.BatchNorm2d(c))
        self.prep_cur = nn.Sequential(nn.Conv2d(c_cur, c, 1, bias=False), nn.BatchNorm2d(c))
        self.relu_prev, self.relu_cur = nn.ReLU(), nn.ReLU()
        self.sep5_cur, self.sep3_prev = SepConv(c, 5), SepConv(c, 3)
        self.sep5_prev, self.sep3_prev2 = SepConv(c, 5), SepConv(c, 3)
        self.avg_cur = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.avg_prev1 = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.avg_prev2 = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.sep3_cur = SepConv(c, 3)

    def forward(self, prev, cur):
        # the pooling and identity branches take the ReLU'd states too, so that each state is read by
        # its ReLU alone (Captum's hooks, the Guided Backprop oracle, misroute a ReLU input read twice)
        p, h = self.relu_prev(self.prep_prev(prev)), self.relu_cur(self.prep_cur(cur))
        s1 = self.sep5_cur(h) + self.sep3_prev(p)
        s2 = self.sep5_prev(p) + self.sep3_prev2(p)
        s3 = self.avg_cur(h) + p
        s4 = self.avg_prev1(p) + self.avg_prev2(p)
        s5 = self.sep3_cur(h) + h
        return torch.cat([p, s1, s2, s3, s4, s5], 1)


class NASNetStyle(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8))  # 16x16
        self.stem2 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.cell1 = NASNetCell(8, 8, c)
        self.cell2 = NASNetCell(8, 6 * c, c)
        self.relu0, self.relu1, self.relu2, self.relu = nn.ReLU(), nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(6 * c, 10)

    def forward(self, x):
        r0 = self.relu0(self.stem(x))
        r1 = self.relu1(self.stem2(r0))
        h1 = self.cell1(r0, r1)
        h2 = self.cell2(r1, self.relu2(h1))
        return self.fc(self.flatten(self.pool(self.relu(h2))))


# ---------------------------------------------------------------------------- time series


class TimeSeriesFCN(nn.Module):
    """The fully convolutional time-series classifier of Wang et al. (2017): three Conv1d-BN-ReLU
    blocks (kernels 8, 5, 3), global average pooling over time, dense; here with a strided conv and
    a max pool too."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(3, 8, 8, padding=4), nn.BatchNorm1d(8), nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(8, 16, 5, stride=2, padding=2), nn.BatchNorm1d(16), nn.ReLU(),
            nn.Conv1d(16, 8, 3, padding=1), nn.BatchNorm1d(8), nn.ReLU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x):
        return self.net(x)


# ---------------------------------------------------------------------------- partly supported


class SqueezeExcite(nn.Module):
    """Conv-BN-ReLU, then a squeeze-and-excitation gate (SENet, MobileNetV3, EfficientNet): the
    feature map times sigmoid(dense(relu(dense(pool(feature map))))), a Mul of two computed tensors,
    which the gradient methods handle and the LRP methods (strict) name as not covered."""

    def __init__(self):
        super().__init__()
        self.features = conv_bn(3, 8, 3, stride=2)
        self.pool, self.flatten = nn.AdaptiveAvgPool2d(1), nn.Flatten()
        self.fc1, self.relu, self.fc2, self.gate = nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 8), nn.Sigmoid()
        self.head_pool, self.head_flatten, self.fc = nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)

    def forward(self, x):
        f = self.features(x)
        g = self.gate(self.fc2(self.relu(self.fc1(self.flatten(self.pool(f))))))
        return self.fc(self.head_flatten(self.head_pool(f * g[:, :, None, None])))


# exported with the legacy exporter only; not every method applies (the support matrix says which)
PARTIAL: dict[str, tuple[type, tuple[int, ...]]] = {"squeeze_excite": (SqueezeExcite, (3, 32, 32))}

# name -> (class, per-sample input shape)
ARCHS: dict[str, tuple[type, tuple[int, ...]]] = {
    "vgg16": (VGG16Style, (3, 32, 32)),
    "resnet50": (ResNet50Style, (3, 32, 32)),
    "densenet": (DenseNetStyle, (3, 32, 32)),
    "inception": (InceptionStyle, (3, 32, 32)),
    "mobilenetv2": (MobileNetV2Style, (3, 32, 32)),
    "nasnet": (NASNetStyle, (3, 32, 32)),
    "timeseries1d": (TimeSeriesFCN, (3, 64)),
}
EXPORTERS = ("legacy", "dynamo")


def path(name: str, exporter: str = "legacy") -> Path:
    return ARCH_DIR / (f"{name}.onnx" if exporter == "legacy" else f"{name}.dynamo.onnx")


def all_paths():
    return [(name, exporter, path(name, exporter)) for name in ARCHS for exporter in EXPORTERS]


def build(name: str) -> nn.Module:
    """Seeded random weights in eval mode; BatchNorm with non-trivial statistics (as zoo.build)."""
    cls, _ = {**ARCHS, **PARTIAL}[name]
    torch.manual_seed(SEED)
    model = cls()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                # He initialization, so that activations keep their scale through VGG's 16 layers
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    m.bias.uniform_(-0.1, 0.1)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                zoo.randomize_batchnorm(m)
    return model.eval()


def twin(name: str) -> nn.Module:
    """The torch module with the weights stored in the legacy export (see zoo.twin)."""
    return zoo.twin(name, path(name, "legacy"), builder=build)


def export_dynamo(module: nn.Module, out: Path, per_sample_shape) -> onnx.ModelProto:
    module = module.eval()
    dummy = torch.randn(2, *per_sample_shape, generator=torch.Generator().manual_seed(SEED))
    for old in (out, out.with_name(out.name + ".data")):
        old.unlink(missing_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (dummy,), str(out), dynamo=True, opset_version=18, input_names=["input"],
                          output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                          external_data=True, verbose=False)
    x = torch.randn(3, *per_sample_shape, generator=torch.Generator().manual_seed(SEED + 1))
    with torch.no_grad():
        want = module(x).numpy()
    got = zoo.ort_run(out, x.numpy())
    if not np.allclose(got, want, atol=1e-5, rtol=1e-5):
        raise RuntimeError(f"{out}: ORT differs from torch by {np.abs(got - want).max():.3g}")
    return onnx.load(str(out))


def main():
    ARCH_DIR.mkdir(exist_ok=True)
    for name, (_, shape) in ARCHS.items():
        module = build(name)
        legacy = zoo.export(module, path(name, "legacy"), shape)
        try:
            dynamo = export_dynamo(module, path(name, "dynamo"), shape)
            dyn_ops = sorted({n.op_type for n in dynamo.graph.node})
        except Exception as exc:  # say so, keep going
            dyn_ops = f"dynamo export failed: {type(exc).__name__}: {exc}"
        params = sum(p.numel() for p in module.parameters())
        print(f"{name:13s} {params:6d} params  legacy {sorted({n.op_type for n in legacy.graph.node})}\n"
              f"{'':28s}dynamo {dyn_ops}")
    for name, (_, shape) in PARTIAL.items():
        legacy = zoo.export(build(name), path(name, "legacy"), shape)
        print(f"{name:13s} legacy {sorted({n.op_type for n in legacy.graph.node})}")


if __name__ == "__main__":
    main()
