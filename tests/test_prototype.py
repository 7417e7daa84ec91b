"""Activation maximization: gradient ascent with the compiled gradient graph finds, within the input
range, an input the chosen neuron scores higher than any real test digit; with the data's density
prior, prototypes that look like the data (as likely as real digits, nearest to their class's mean)."""
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from nnxplain.cli import main
from nnxplain.errors import NnxplainError
from nnxplain.prototype import DensityPrior, gaussian_blur, prototype, prototypes

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
    assert np.load(tmp_path / "p.npy").shape == (1, 1, 8, 8)  # [neurons, *input dims]: an input batch
    assert main(["prototype", str(DIGITS), "--neuron", "10", "-o", str(tmp_path / "q.png")]) == 2
    assert "neurons 0..9" in capsys.readouterr().err and not (tmp_path / "q.png").exists()
    with pytest.raises(NnxplainError, match="low < high"):
        prototype(DIGITS, 1, low=1.0, high=1.0)


def test_density_prior_makes_prototypes_that_look_like_the_data():
    """With the training data, every class's prototype is classified as that class, is as likely under
    the data's Gaussian as real test digits are (above their 5th percentile of log density; the
    plain prototypes are far below it) and is nearest to its own class's mean digit."""
    train = np.load(ZOO_DIR / "digits_train.npz")
    test = np.load(ZOO_DIR / "digits_test.npz")["x"]
    density = DensityPrior(train["x"])
    typical = np.percentile(density.log_density(test), 5)
    found = prototypes(DIGITS, range(10), data=train["x"])
    assert found.x.shape == (10, 1, 8, 8) and found.x.min() >= 0.0 and found.x.max() <= 1.0
    assert (found.scores.argmax(1) == np.arange(10)).all()
    assert (density.log_density(found.x) > typical).all()
    means = np.stack([train["x"][train["y"] == k].mean(0).ravel() for k in range(10)])
    nearest = ((found.x.reshape(10, 1, -1) - means[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == np.arange(10)).all()
    plain = prototypes(DIGITS, range(10))
    assert (density.log_density(plain.x) < typical - 100).all()


def test_prototypes_of_several_neurons_are_optimized_independently():
    """One batch, one neuron per row: the first row starts from the same seeded noise as a prototype
    of that neuron alone, and ends at the same input."""
    together = prototypes(DIGITS, [2, 7], steps=40)
    alone, history = prototype(DIGITS, 2, steps=40)
    assert np.allclose(together.x[0], alone, atol=1e-5) and len(together.histories[0]) == len(history) == 41
    assert list(together.scores.argmax(1)) == [2, 7]


def test_blur_and_jitter_keep_the_range_and_the_class():
    found = prototypes(DIGITS, [4], steps=60, data=ZOO_DIR / "digits_train.npz", blur=0.5, jitter=1)
    assert found.x.min() >= 0.0 and found.x.max() <= 1.0 and found.scores[0].argmax() == 4
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0
    smooth = gaussian_blur(x, 1.0)
    assert np.isclose(smooth.sum(), 1.0) and smooth[0, 0, 2, 2] < 1.0 and smooth[0, 0, 2, 1] > 0


def test_cli_draws_a_labelled_grid_of_prototypes(tmp_path, capsys):
    out = tmp_path / "protos.png"
    assert main(["prototype", str(DIGITS), "--neuron", "0-9", "--data", str(ZOO_DIR / "digits_train.npz"),
                 "--steps", "50", "-o", str(out)]) == 0
    assert "0: " in capsys.readouterr().out
    image = Image.open(out)
    assert image.format == "PNG" and image.width > image.height  # two rows of five
    assert np.load(tmp_path / "protos.npy").shape == (10, 1, 8, 8)
    assert main(["prototype", str(DIGITS), "--neuron", "3-1", "-o", str(tmp_path / "q.png")]) == 2
    assert "ends before it starts" in capsys.readouterr().err
