"""Generated image data for the dataset and engine tests: the digits as an ImageFolder of PNGs, folders
of random PNGs, and a small convolutional model for 64x64 RGB images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from conftest import ZOO_DIR

DIGITS = ZOO_DIR / "digits_cnn.onnx"
DIGITS_TEST = ZOO_DIR / "digits_test.npz"
DIGITS_TRAIN = ZOO_DIR / "digits_train.npz"


def digits_folder(folder: Path, count: int | None = None) -> tuple[Path, np.ndarray, np.ndarray]:
    """The digits test set as 8-bit grayscale PNGs in class subfolders 0..9 (ImageFolder), named so
    that the listing order is the array order: (folder, the pixels as read back / 255, labels) in
    the listing order (by class, then by index)."""
    data = np.load(DIGITS_TEST)
    x, y = data["x"][:count], data["y"][:count]
    pixels = np.round(x[:, 0] * 255).astype(np.uint8)
    for i, (image, label) in enumerate(zip(pixels, y)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(folder / str(label) / f"{i:04d}.png")
    order = np.lexsort((np.arange(len(y)), y))  # by class, then by file name
    return folder, (pixels[order, None] / np.float32(255)).astype(np.float32), y[order]


def random_pngs(folder: Path, count: int, side: int = 64, seed: int = 0, mode: str = "RGB") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    for i in range(count):
        pixels = rng.integers(0, 256, (side, side, channels), dtype=np.uint8)
        Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode).save(folder / f"{i:05d}.png")
    return folder


def small_cnn(path: Path, side: int = 64, channels: int = 3, classes: int = 10) -> Path:
    """Conv 3x3/2 (-> 8) + ReLU, Conv 3x3/2 (-> 16) + ReLU, global average pool, Gemm (-> classes);
    seeded random weights, dynamic batch."""
    rng = np.random.default_rng(0)

    def const(name, shape, scale):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [const("w1", (8, channels, 3, 3), 0.3), const("b1", (8,), 0.1), const("w2", (16, 8, 3, 3), 0.2),
             const("b2", (16,), 0.1), const("w3", (classes, 16), 0.5), const("b3", (classes,), 0.1)]
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", strides=[2, 2], pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", strides=[2, 2], pads=[1] * 4),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="pool"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], name="dense", transB=1)]
    graph = helper.make_graph(nodes, "small_cnn",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", channels, side, side])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path
