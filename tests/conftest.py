import numpy as np
import pytest


ZOO_DIR = __import__("pathlib").Path(__file__).resolve().parent.parent / "models"


def relative_error(actual, expected) -> float:
    """max |actual - expected| / max |expected|: the float32-precision yardstick of these tests."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30))


@pytest.fixture
def rng():
    return np.random.default_rng(0)
