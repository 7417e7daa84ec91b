"""Perturbation analysis (pixel flipping) with AOPC: the random ordering is the baseline every method
must beat on the trained digits model; the pieces (regions, perturbations, AOPC) are checked by hand."""
import csv

import numpy as np
import pytest

from nnxplain.cli import main
from nnxplain.errors import NnxplainError
from nnxplain.evaluate import aopc, default_region, evaluate, perturb, region_relevance

from conftest import ZOO_DIR

DIGITS = ZOO_DIR / "digits_cnn.onnx"


@pytest.fixture(scope="module")
def digits():
    return np.load(ZOO_DIR / "digits_test.npz")["x"][:200]


def test_random_ordering_is_worst_on_the_trained_digits_model(digits):
    methods = ["gradient", "input_t_gradient", "integrated_gradients", "lrp.epsilon", "deep_taylor",
               "guided_backprop", "smoothgrad"]
    result = evaluate(DIGITS, methods, digits, params={"noise_scale": 0.2, "augment_by_n": 16}, progress=False)
    scores = result["aopc"]
    assert set(scores) == set(methods) | {"random"}
    assert min(scores, key=scores.get) == "random", scores
    for name in methods:
        curve = result["curves"][name]
        assert curve.shape == (17,) and curve[0] == result["curves"]["random"][0]  # 8x8 images: 2x2 regions, 16
        assert curve[-1] < curve[0]


def test_regions_sum_relevance_over_channels_and_pixels():
    r = np.arange(2 * 2 * 5 * 5, dtype=np.float64).reshape(2, 2, 5, 5)
    sums = region_relevance(r, 2)
    assert sums.shape == (2, 3, 3)
    assert sums[1, 0, 0] == r[1, :, :2, :2].sum() and sums[0, 2, 2] == r[0, :, 4, 4].sum()
    assert default_region((1, 3, 224, 224)) == 9 and default_region((1, 1, 8, 8)) == 2


def test_perturbations_touch_only_the_masked_pixels(rng):
    x = rng.random((2, 3, 4, 4)).astype(np.float32)
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2, :2] = True
    stats = {"region_mean": np.full_like(x, 0.5), "mean": np.zeros((1, 3, 1, 1)), "std": np.ones((1, 3, 1, 1)),
             "low": 0.0, "high": 1.0}
    for how, expected in [("zeros", 0.0), ("mean", 0.5), ("invert", 1 - x[0, :, :2, :2])]:
        out = perturb(x, masks, how, stats, rng)
        assert np.allclose(out[0, :, :2, :2], expected)
        assert np.array_equal(out[0, :, 2:], x[0, :, 2:]) and np.array_equal(out[1], x[1])
    with pytest.raises(NnxplainError, match="perturbation must be one of"):
        perturb(x, masks, "blur", stats, rng)


def test_aopc_is_the_mean_drop_over_steps_and_images():
    curve = np.array([[4.0, 2.0], [2.0, 2.0], [0.0, 1.0]])  # steps x images
    assert aopc(curve) == pytest.approx(np.mean([0, 0, 2, 0, 4, 1]))


def test_cli_evaluate_prints_the_table_and_writes_plot_and_csv(tmp_path, capsys, digits):
    np.save(tmp_path / "x.npy", digits[:40])
    out = tmp_path / "curves"
    assert main(["evaluate", str(DIGITS), "-m", "lrp.epsilon", "-m", "gradient", "--data", str(tmp_path / "x.npy"),
                 "--steps", "6", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "AOPC" in text and "lrp.epsilon" in text and "random" in text
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.reader(open(tmp_path / "curves.csv")))
    assert rows[0] == ["step", "lrp.epsilon", "gradient", "random"] and len(rows) == 8


def test_cli_evaluate_errors_are_one_line(tmp_path, capsys):
    np.save(tmp_path / "flat.npy", np.zeros((3, 64), np.float32))
    assert main(["evaluate", str(DIGITS), "-m", "gradient", "--data", str(tmp_path / "flat.npy"),
                 "-o", str(tmp_path / "c")]) == 2
    assert "images [N, C, H, W]" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 8, 8), np.float32))
    assert main(["evaluate", str(DIGITS), "-m", "gradient", "--data", str(tmp_path / "x.npy"), "--steps", "99"]) == 2
    assert "steps must be between 1 and the number of regions (16)" in capsys.readouterr().err
