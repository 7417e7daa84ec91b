"""examples/node/explain.js: an explainer run from Node.js alone on a PNG image, its heatmap PNG
checked pixel by pixel against the same explanation computed in Python."""
from __future__ import annotations

import os
import subprocess

import numpy as np
import onnx
from PIL import Image

import nnxplain
from nnxplain.runtime import session
from tests.portability import tier

ROOT = tier.ROOT
SCRIPT = ROOT / "examples" / "node" / "explain.js"


def heatmap(relevance: np.ndarray, scale: int) -> np.ndarray:
    """The example's colouring: red positive, blue negative, white 0, scaled by the largest |value|."""
    r = relevance.sum(axis=0)
    v = r / (np.abs(r).max() or 1)
    fade = np.round(255 * (1 - np.abs(v)))
    rgb = np.where(v[..., None] >= 0, np.stack([np.full_like(fade, 255), fade, fade], -1),
                   np.stack([fade, fade, np.full_like(fade, 255)], -1))
    return rgb.repeat(scale, 0).repeat(scale, 1).astype(np.uint8)


def run_example(*args):
    env = {**os.environ, "NODE_PATH": str(tier.npm_packages())}
    return subprocess.run(["node", str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env, timeout=120)


def test_node_example_writes_the_heatmap_of_the_explanation(tmp_path):
    explainer = tmp_path / "explainer.onnx"
    onnx.save(nnxplain.compile(str(ROOT / "models" / "archs" / "vgg16.onnx"), ["lrp.epsilon"]), explainer)
    pixels = np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "image.png")
    done = run_example(explainer, tmp_path / "image.png", tmp_path / "heatmap.png")
    assert done.returncode == 0, done.stderr
    assert "lrp.epsilon: largest score" in done.stdout
    x = (pixels.astype(np.float32) / 255).transpose(2, 0, 1)[None]
    relevance = session(str(explainer)).run(["lrp.epsilon"], {"input": x})[0][0]
    written = np.asarray(Image.open(tmp_path / "heatmap.png").convert("RGB")).astype(int)
    assert written.shape == (256, 256, 3)
    assert np.abs(written - heatmap(relevance, 8)).max() <= 1  # float32 (ours) vs float64 (Node) rounding


def test_node_example_gray_model_and_index_selection(tmp_path):
    """A one-channel model (the digits classifier), a palette PNG of another size, --neuron."""
    explainer = tmp_path / "explainer.onnx"
    onnx.save(nnxplain.compile(str(ROOT / "models" / "digits_cnn.onnx"), ["gradient", "guided_backprop"],
                               neuron_selection="index"), explainer)
    digits = np.load(ROOT / "models" / "digits_test.npz")
    digit = digits["x"][0].reshape(8, 8)
    Image.fromarray(np.round(digit / digit.max() * 255).astype(np.uint8).repeat(2, 0).repeat(2, 1)).convert("P") \
        .save(tmp_path / "digit.png")
    done = run_example(explainer, tmp_path / "digit.png", tmp_path / "heatmap.png", "--output", "gradient",
                       "--neuron", 3)
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "heatmap.png").size == (256, 256)
    missing = run_example(explainer, tmp_path / "digit.png", tmp_path / "heatmap2.png")
    assert missing.returncode == 1 and "pass --neuron K" in missing.stderr
