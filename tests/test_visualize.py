"""Pictures: heatmap (signed, diverging), graymap (absolute), projection into the input range, overlay,
channel reduction; `analyze -o out.png` and `analyze --grid` write real PNG files."""
import io

import numpy as np
import pytest
from PIL import Image

from nnxplain import visualize as vis
from nnxplain.cli import main
from nnxplain.errors import NnxplainError

from conftest import ZOO_DIR

DIGITS = ZOO_DIR / "digits_cnn.onnx"


def test_heatmap_is_signed_and_diverging():
    r = np.array([[[-2.0, 0.0, 1.0]]])  # [C=1, H=1, W=3]
    image = vis.heatmap(r)
    assert image.shape == (1, 3, 3)
    negative, zero, positive = image[0]
    assert negative[2] > negative[0] and positive[0] > positive[2]  # blue below zero, red above
    assert np.allclose(zero, 1.0, atol=0.01)                        # zero is white
    assert np.allclose(negative, [0, 0, 1], atol=0.01)              # the largest |r| is the full colour


def test_graymap_shows_absolute_values():
    image = vis.graymap(np.array([[[-2.0, 0.0, 1.0]]]))
    assert np.allclose(image[0, :, 0], [1.0, 0.0, 0.5]) and np.allclose(image[..., 0], image[..., 2])


def test_channels_reduce_by_sum_or_norm():
    r = np.array([[[3.0]], [[-4.0]]])
    assert vis.reduce_channels(r, "sum")[0, 0] == -1.0
    assert vis.reduce_channels(r, "norm")[0, 0] == 5.0
    with pytest.raises(NnxplainError, match="channel reduction must be one of"):
        vis.reduce_channels(r, "max")


def test_projection_maps_the_signal_into_the_input_range():
    r = np.array([[[-1.0, 0.0, 0.5]]])
    shown = vis.project(r, low=0.0, high=1.0)
    assert np.allclose(shown[0, :, 0], [0.0, 0.5, 0.75])            # -max -> low, 0 -> middle
    colour = vis.project(np.random.default_rng(0).standard_normal((3, 4, 5)))
    assert colour.shape == (4, 5, 3) and not np.allclose(colour[..., 0], colour[..., 1])  # colour stays colour


def test_overlay_blends_heatmap_over_input():
    x = np.zeros((1, 2, 2))
    r = np.array([[[1.0, 0.0], [0.0, 0.0]]])
    image = vis.overlay(r, x)
    assert image[0, 0, 0] > image[0, 0, 2] and np.allclose(image[1, 1], image[1, 1, 0], atol=0.01)


def test_analyze_writes_a_png(tmp_path, capsys):
    x = np.load(ZOO_DIR / "digits_test.npz")["x"][:3]
    np.save(tmp_path / "x.npy", x)
    assert main(["analyze", str(DIGITS), "-m", "lrp.epsilon", "-i", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "r.png")]) == 0
    image = Image.open(io.BytesIO((tmp_path / "r.png").read_bytes()))
    assert image.format == "PNG" and image.width == 3 * image.height  # three pictures side by side


def test_grid_draws_inputs_times_methods(tmp_path, capsys):
    x = np.load(ZOO_DIR / "digits_test.npz")["x"][:4]
    np.save(tmp_path / "x.npy", x)
    assert main(["analyze", str(DIGITS), "-m", "gradient", "-m", "lrp.epsilon", "-m", "guided_backprop",
                 "-i", str(tmp_path / "x.npy"), "--grid", str(tmp_path / "grid.png")]) == 0
    assert "4 inputs x 3 methods" in capsys.readouterr().out
    image = Image.open(tmp_path / "grid.png")
    assert image.format == "PNG" and image.height > image.width * 0.8  # 4 rows, 4 columns (input + 3 methods)


def test_analyze_picture_errors(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 8, 8), np.float32))
    assert main(["analyze", str(DIGITS), "-m", "gradient", "-m", "lrp.z", "-i", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "r.png")]) == 2
    assert "several with --grid" in capsys.readouterr().err
    assert main(["analyze", str(DIGITS), "-m", "gradient", "-i", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "r.jpg")]) == 2
    assert "writes .npy (the array) or .png" in capsys.readouterr().err
    assert not list(tmp_path.glob("r.*"))
