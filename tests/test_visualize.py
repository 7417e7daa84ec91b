"""Pictures: heatmap (signed, diverging), graymap (absolute), projection into the input range, overlay,
channel reduction; `analyze -o out.png` and `analyze --grid` write real PNG files."""
import io

import numpy as np
import pytest
from PIL import Image

import nnxplain
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
    assert image.format == "PNG" and image.width > 2 * image.height  # three labelled panels side by side


# ------------------------------------------------------------------ choosing inputs, labels, the cap

TEST = ZOO_DIR / "digits_test.npz"


@pytest.mark.parametrize("text, expected", [
    ("5", [5]), ("0-3", [0, 1, 2, 3]), ("0,5,7-9", [0, 5, 7, 8, 9]), (":3", [0, 1, 2]), ("357:", [357, 358, 359]),
    ("::120", [0, 120, 240]), ("-2:", [358, 359]), ("9,2", [9, 2]),
])
def test_select_takes_indices_ranges_and_slices(text, expected):
    from nnxplain.cli import parse_selection
    assert parse_selection(text, 360) == expected


@pytest.mark.parametrize("text, message", [
    ("360", r"index 360 is beyond the 360 inputs \(0..359\)"), ("4-2", "ends before it starts"),
    ("a", "'a' is not an index"), ("::0", "step 0"), ("400:", "selects nothing"), (",", "selects no input"),
])
def test_select_errors(text, message):
    from nnxplain.cli import parse_selection
    with pytest.raises(NnxplainError, match=message):
        parse_selection(text, 360)


def test_analyze_select_explains_only_the_chosen_inputs(tmp_path, capsys):
    assert main(["analyze", str(DIGITS), "-m", "gradient", "-i", str(TEST), "--select", "0,5,7-9",
                 "-o", str(tmp_path / "g.npy")]) == 0
    chosen = np.load(tmp_path / "g.npy")
    x = np.load(TEST)["x"]
    whole = nnxplain.create_analyzer("gradient", str(DIGITS)).analyze(x)
    assert np.array_equal(chosen, whole[[0, 5, 7, 8, 9]])
    assert main(["analyze", str(DIGITS), "-m", "gradient", "-i", str(TEST), "--select", "0-11",
                 "-o", str(tmp_path / "g.png")]) == 0
    assert "shape [12, 1, 8, 8]" in capsys.readouterr().out
    image = Image.open(tmp_path / "g.png")
    assert 1.5 < image.width / image.height < 4  # two rows of six labelled panels, not a strip of 360
    assert main(["analyze", str(DIGITS), "-m", "gradient", "-i", str(TEST), "--select", "400",
                 "-o", str(tmp_path / "h.png")]) == 2
    assert "index 400 is beyond the 360 inputs" in capsys.readouterr().err and not (tmp_path / "h.png").exists()


def test_pictures_draw_at_most_16_inputs_and_say_so(tmp_path, capsys):
    assert main(["analyze", str(DIGITS), "-m", "gradient", "-m", "lrp.z", "-i", str(TEST),
                 "--grid", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert "16 inputs x 2 methods" in out and "the first 16 of 360 inputs drawn (choose others with --select)" in out
    image = Image.open(tmp_path / "grid.png")
    assert image.height < 3000  # 16 rows, not 360
    assert main(["analyze", str(DIGITS), "-m", "gradient", "-i", str(TEST), "-o", str(tmp_path / "g.png")]) == 0
    assert "the first 16 of 360 inputs drawn" in capsys.readouterr().out
    assert main(["analyze", str(DIGITS), "-m", "gradient", "-i", str(TEST), "-o", str(tmp_path / "g.npy")]) == 0
    assert np.load(tmp_path / "g.npy").shape == (360, 1, 8, 8)  # the array has every input


def test_labels_name_the_input_its_true_class_and_the_explained_score():
    from nnxplain.cli import _picture_labels
    scores = np.array([[0.5, 2.25, -1.0], [3.0, 0.0, 1.0]])
    y = np.load(TEST)["y"]
    labels = _picture_labels([7, 9], scores, None, y)
    assert labels == [f"#7  true {y[7]}\npredicted 1: 2.25", f"#9  true {y[9]}\npredicted 0: 3"]
    no_labels = np.full(len(y), -1)  # data without labels (an .npy, images not in class folders)
    assert _picture_labels([0], scores[:1], [2], no_labels) == ["#0\nexplained 2: -1"]


def test_figures_label_panels_and_draw_colour_bars(monkeypatch):
    """Every explanation panel has a title (or its row a label) and a colour bar in the explanation's
    units; the grid's column titles are the method names."""
    import matplotlib.figure
    seen = {}
    real = matplotlib.figure.Figure.savefig

    def spy(fig, *a, **k):
        seen["titles"] = [ax.get_title() for ax in fig.axes]
        seen["ylabels"] = [ax.get_ylabel() for ax in fig.axes]
        seen["bars"] = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        return real(fig, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    rng = np.random.default_rng(0)
    x, r = rng.random((3, 1, 8, 8)), rng.standard_normal((3, 1, 8, 8))
    vis.explanation_png(x, r, "gradient", ["a", "b", "c"])
    assert seen["titles"][:3] == ["a", "b", "c"] and len(seen["bars"]) == 3
    vis.grid_png(x, {"gradient": r, "lrp.z": r * 2}, ["a", "b", "c"])
    assert "gradient\n(heatmap)" in seen["titles"] and "lrp.z\n(heatmap)" in seen["titles"]
    assert [lab for lab in seen["ylabels"] if lab] == ["a", "b", "c"] and len(seen["bars"]) == 6


def test_percentile_clipping_and_per_image_scales():
    r = np.concatenate([np.ones(99), [100.0]]).reshape(1, 10, 10)
    assert vis.scale_of(r, 100) == 100.0 and vis.scale_of(r, 98) == 1.0
    image = vis.heatmap(r, percentile=98)  # the outlier saturates, the rest is full red, not near white
    assert np.allclose(image[0, 0], image[9, 9], atol=0.01) and image[0, 0, 1] < 0.05
    small, big = np.full((1, 2, 2), 0.01), np.full((1, 2, 2), 10.0)
    assert vis.picture_scales("heatmap", [small, big], "sum", 100, "image") == [0.01, 10.0]
    assert vis.picture_scales("heatmap", [small, big], "sum", 100, "method") == [10.0, 10.0]
    with pytest.raises(NnxplainError, match="percentile must be in"):
        vis.scale_of(r, 0)


def test_one_signed_signal_uses_the_whole_range():
    """PatternNet's signal can be positive everywhere: projected, 0 .. max spans the input range (not its
    upper half, which made every digit the same bright blob)."""
    shown = vis.project(np.array([[[0.0, 1.0, 2.0]]]))
    assert np.allclose(shown[0, :, 0], [0.0, 0.5, 1.0])
    assert vis.default_kind("guided_backprop", channels=1) == "heatmap"
    assert vis.default_kind("guided_backprop", channels=3) == "project" and vis.default_kind("lrp.z", 3) == "heatmap"


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
