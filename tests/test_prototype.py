"""Activation maximization: gradient ascent with the compiled gradient graph finds, within the input
range, an input the chosen neuron scores higher than any real test digit."""
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from nnxplain.cli import main
from nnxplain.errors import NnxplainError
from nnxplain.prototype import prototype

from conftest import ZOO_DIR

DIGITS = ZOO_DIR / "digits_cnn.onnx"


@pytest.mark.parametrize("neuron", [0, 3, 7])
def test_prototype_beats_every_real_digit_and_stays_in_range(neuron):
    x, history = prototype(DIGITS, neuron, steps=100)
    assert x.shape == (1, 8, 8) and x.min() >= 0.0 and x.max() <= 1.0
    model = ort.InferenceSession(str(DIGITS), providers=["CPUExecutionProvider"])
    scores = model.run(None, {"input": x[None]})[0][0]
    data = model.run(None, {"input": np.load(ZOO_DIR / "digits_test.npz")["x"]})[0]
    assert scores.argmax() == neuron
    assert scores[neuron] > data[:, neuron].max()
    assert history[-1] > history[0]


def test_l2_penalty_shrinks_the_prototype():
    weak, _ = prototype(DIGITS, 3, steps=60, l2=0.0)
    strong, _ = prototype(DIGITS, 3, steps=60, l2=2.0)
    assert np.sum(strong ** 2) < np.sum(weak ** 2)


def test_cli_prototype_writes_png_and_npy(tmp_path, capsys):
    assert main(["prototype", str(DIGITS), "--neuron", "5", "--steps", "30", "-o", str(tmp_path / "p.png")]) == 0
    assert Image.open(tmp_path / "p.png").format == "PNG"
    assert np.load(tmp_path / "p.npy").shape == (1, 8, 8)
    assert main(["prototype", str(DIGITS), "--neuron", "10", "-o", str(tmp_path / "q.png")]) == 2
    assert "neurons 0..9" in capsys.readouterr().err and not (tmp_path / "q.png").exists()
    with pytest.raises(NnxplainError, match="low < high"):
        prototype(DIGITS, 1, low=1.0, high=1.0)
