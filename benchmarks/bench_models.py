"""Benchmark models: ImageNet-layout CNNs (input 3x224x224) at reduced width, built deterministically.

- `vgg16`: the VGG-16 layer layout (13 3x3 convs in 5 stages of 2-2-3-3-3, each followed by ReLU,
  2x2/2 max-pooling after each stage, then a 3-layer classifier) with channel widths 16-32-64-128-128
  instead of 64-128-256-512-512 and 512-wide hidden classifier layers instead of 4096.
- `resnet18`: the ResNet-18 layout (stem 7x7/2 conv + BN + ReLU + 3x3/2 max-pool, 4 stages of 2 basic
  blocks with BN, 1x1/2 conv + BN projection shortcuts where the shape changes, global average
  pooling, linear) with widths 16-32-64-128 instead of 64-128-256-512.

Both end in 1000 raw logits. `export_all(folder)` writes `<name>.onnx` for each into `folder` (a
temporary folder: the files are not committed) with torch's legacy exporter, opset 17, dynamic batch.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import sys

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo's models/ package
from models.zoo import BasicBlock  # noqa: E402  (the zoo's ResNet basic block, projection shortcut)

SEED = 0
OPSET = 17
INPUT_SHAPE = (3, 224, 224)
NUM_CLASSES = 1000


class VGG16(nn.Module):
    STAGES = (2, 2, 3, 3, 3)

    def __init__(self, widths=(16, 32, 64, 128, 128), hidden: int = 512, num_classes: int = NUM_CLASSES):
        super().__init__()
        layers, c_in = [], INPUT_SHAPE[0]
        for n_convs, width in zip(self.STAGES, widths):
            for _ in range(n_convs):
                layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU()]
                c_in = width
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)  # 224 -> 7
        side = INPUT_SHAPE[1] // 2 ** len(self.STAGES)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * side * side, hidden), nn.ReLU(), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class ResNet18(nn.Module):
    BLOCKS = (2, 2, 2, 2)

    def __init__(self, widths=(16, 32, 64, 128), num_classes: int = NUM_CLASSES):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(INPUT_SHAPE[0], widths[0], 7, stride=2, padding=3, bias=False),  # 112
            nn.BatchNorm2d(widths[0]), nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),  # 56, overlapping windows
        )
        blocks, c_in = [], widths[0]
        for stage, (n_blocks, width) in enumerate(zip(self.BLOCKS, widths)):
            for i in range(n_blocks):
                blocks.append(BasicBlock(c_in, width, stride=2 if stage > 0 and i == 0 else 1))
                c_in = width
        self.blocks = nn.Sequential(*blocks)  # 56 -> 7
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


MODELS = {"vgg16": VGG16, "resnet18": ResNet18}


def build(name: str) -> nn.Module:
    """The model with deterministic random weights (He init) and non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(SEED)
    model = MODELS[name]()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    m.bias.uniform_(-0.1, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def export(name: str, path: str | Path) -> Path:
    """Export model `name` to `path` (input `input`, output `logits`, dynamic batch)."""
    model = build(name)
    dummy = torch.randn(1, *INPUT_SHAPE, generator=torch.Generator().manual_seed(SEED))
    with warnings.catch_warnings():  # the legacy exporter warns that it is deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return Path(path)


def export_all(folder: str | Path, names=None) -> dict[str, Path]:
    folder = Path(folder)
    return {name: export(name, folder / f"{name}.onnx") for name in (names or MODELS)}
