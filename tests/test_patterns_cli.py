"""The pattern workflow on the command line: fit, then compile with the patterns file, or both in
one step; every misuse ends in one clear line and exit status 2, with no file left behind."""
import numpy as np
import pytest

from nnxplain.patterns import Patterns
from nnxplain.runtime import session

from conftest import ZOO_DIR, relative_error
from test_bad_input import cli

DIGITS = ZOO_DIR / "digits_cnn.onnx"
TRAIN = ZOO_DIR / "digits_train.npz"
TEST = ZOO_DIR / "digits_test.npz"


def test_fit_then_compile_equals_compile_in_one_step(tmp_path):
    fitted = cli("fit", DIGITS, "--data", TRAIN, "--pattern-type", "linear", "-o", tmp_path / "patterns.npz")
    assert fitted.returncode == 0, fitted.stderr
    assert "linear patterns of 4 layers, fitted on 1437 samples" in fitted.stdout
    assert Patterns.load(tmp_path / "patterns.npz").pattern_type == "linear"

    two_steps = cli("compile", DIGITS, "--method", "patternattribution", "--patterns", tmp_path / "patterns.npz",
                    "-o", tmp_path / "a.onnx")
    one_step = cli("compile", DIGITS, "--method", "patternattribution", "--fit-data", TRAIN,
                   "--pattern-type", "linear", "-o", tmp_path / "b.onnx")
    assert two_steps.returncode == 0 and one_step.returncode == 0, two_steps.stderr + one_step.stderr
    x = np.load(TEST)["x"][:8]
    a = session(str(tmp_path / "a.onnx")).run(["patternattribution"], {"input": x})[0]
    b = session(str(tmp_path / "b.onnx")).run(["patternattribution"], {"input": x})[0]
    assert relative_error(a, b) < 1e-5 and np.abs(a).max() > 0


def test_analyze_fits_in_one_step(tmp_path):
    result = cli("analyze", DIGITS, "--method", "pattern.net", "--fit-data", TRAIN, "--input", TEST,
                 "-o", tmp_path / "signal.npy")
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "signal.npy").shape == (360, 1, 8, 8)


@pytest.mark.parametrize("args, expected", [
    (["compile", DIGITS, "-m", "patternattribution"], "needs fitted patterns: fit them with `nnxplain fit"),
    (["compile", DIGITS, "-m", "patternattribution", "--patterns", TEST], "not a patterns file"),
    (["compile", DIGITS, "-m", "patternattribution", "--patterns", "missing.npz", "--fit-data", TRAIN],
     "either --patterns or --fit-data"),
    (["compile", DIGITS, "-m", "gradient", "--fit-data", TRAIN], "--fit-data is for methods that need patterns"),
    (["compile", ZOO_DIR / "lenet_bn.onnx", "-m", "patternnet", "--fit-data", TRAIN],
     "data: input 'input' expects shape ['batch', 1, 16, 16], got [256, 1, 8, 8]"),
    (["fit", DIGITS, "--data", "missing.npy"], "missing.npy: not a readable .npy/.npz file"),
    (["fit", DIGITS, "--data", TRAIN, "--batch-size", "0"], "batch_size must be at least 1"),
])
def test_pattern_misuse_is_one_clear_error(tmp_path, args, expected):
    out = tmp_path / ("out.npz" if args[0] == "fit" else "out.onnx")  # -o names a file as what it is
    result = cli(*args, "-o", out, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not out.exists()


def test_patterns_of_another_model_are_refused(tmp_path):
    cli("fit", DIGITS, "--data", TRAIN, "-o", tmp_path / "digits.npz")
    result = cli("compile", ZOO_DIR / "lenet_bn.onnx", "-m", "pattern.attribution", "--patterns",
                 tmp_path / "digits.npz", "-o", tmp_path / "out.onnx")
    assert result.returncode == 2 and "fitted on another model" in result.stderr
