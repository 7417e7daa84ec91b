"""Property-based tests (hypothesis) over every built-in method's parameters and inputs: a valid
parameter never gives NaN, inputs of any scale (zeros, subnormals, huge values) give finite
explanations, a sample holding NaN is explained as NaN without touching the others, and an invalid
parameter is one clear NnxplainError when the method is resolved, before anything is compiled."""
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnxplain
from nnxplain.methods import load_method
from nnxplain.params import MAX_SAMPLES
from nnxplain.perturbation import run as run_perturbation

from conftest import ZOO_DIR

# the methods of kind "perturbation" (occlusion, lime) and their parameters with the defaults
PERTURBATION = {m: load_method(m).params for m in nnxplain.methods() if load_method(m).kind == "perturbation"}

MODEL = ZOO_DIR / "lenet_bn.onnx"   # Conv, BatchNormalization, Relu, MaxPool, Gemm; input [N, 1, 16, 16]
# derandomize: the same examples on every run, so that CI is reproducible; each method draws its own
SETTINGS = settings(max_examples=3, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

finite = dict(allow_nan=False, allow_infinity=False)
VALID = {
    "epsilon": st.one_of(st.just(0.0), st.floats(1e-30, 10.0, **finite)),
    "gamma": st.floats(0.0, 2.0, **finite),
    "stddev": st.floats(1e-3, 10.0, **finite),
    "seed": st.integers(0, 2 ** 32),
    "reference_inputs": st.floats(-3.0, 3.0, **finite),
    "noise_scale": st.floats(0.0, 3.0, **finite),
    "steps": st.integers(1, 6),
    "augment_by_n": st.integers(1, 6),
    "chunk": st.integers(0, 3),
    "riemann": st.sampled_from(["right", "left", "middle", "trapezoid"]),
    "noise": st.sampled_from(["graph", "input"]),
    "postprocess": st.sampled_from(["none", "abs", "square"]),
    "pattern_type": st.sampled_from(["linear", "relu"]),
    "patch": st.integers(1, 4),
    "stride": st.integers(1, 3),
    "fill": st.floats(-2.0, 2.0, **finite),
    "segment": st.integers(1, 4),
    "samples": st.integers(2, 16),
    "kernel_width": st.floats(0.05, 2.0, **finite),
}


@st.composite
def valid_params(draw, settable: list[str], required: list[str], lime: bool = False):
    """Some of a method's parameters (all the required ones), each drawn from its valid range."""
    chosen = set(draw(st.sets(st.sampled_from(settable)))) if settable else set()
    chosen |= set(required) | ({"alpha"} if "alpha" in settable and not lime else set())  # alpha or beta is needed
    out = {}
    if {"alpha", "beta"} & chosen:  # alpha - beta = 1, beta >= 0 (lime's alpha: the ridge penalty, >= 0)
        beta = draw(st.floats(0.0, 3.0, **finite))
        out.update({"alpha": beta + 1.0} if lime else {"alpha": beta + 1.0, "beta": beta})
    if {"low", "high"} & chosen:
        low = draw(st.floats(-5.0, 1.0, **finite))
        out.update(low=low, high=low + draw(st.floats(0.1, 5.0, **finite)))
    for key in sorted(chosen - set(out) - {"alpha", "beta", "low", "high"}):
        out[key] = draw(VALID[key])
    if lime:
        out = {k: v for k, v in out.items() if k in PERTURBATION["lime"]}
    return out


def batch(seed: int) -> np.ndarray:
    """Zeros, subnormal values, an ordinary sample, a huge one and a sample with one NaN."""
    base = np.random.default_rng(seed).normal(size=(1, 1, 16, 16))
    x = np.concatenate([base * 0, base * 1e-39, base, base * 1e6, base]).astype(np.float32)
    x[4, 0, 3, 5] = np.nan
    return x


def _stand_in_patterns():
    from nnxplain.support import stand_in_patterns
    return stand_in_patterns(onnx.load(str(MODEL)))


PATTERNS = None
COMPILED = sorted(m for m in nnxplain.methods() if m not in PERTURBATION)


def _check(relevance, x):
    assert relevance.shape == x.shape
    assert np.isfinite(relevance[:4]).all(), "finite samples, valid parameters: finite explanations"
    assert np.isnan(relevance[4]).all(), "a sample holding NaN is explained as NaN"


@pytest.mark.parametrize("method", COMPILED)
def test_valid_parameters_and_any_finite_input_give_finite_explanations(method):
    global PATTERNS
    m = load_method(method)
    if "patterns" in m.needs and PATTERNS is None:
        PATTERNS = _stand_in_patterns()

    @SETTINGS
    @given(params=valid_params(m.settable(), m.required), seed=st.integers(0, 1000))
    def check(params, seed):
        x = batch(seed)
        analyzer = nnxplain.create_analyzer(method, MODEL, patterns=PATTERNS if "patterns" in m.needs else None,
                                            **params)
        with pytest.warns(nnxplain.NnxplainWarning, match="1 of 5 samples hold NaN or inf"):
            _check(analyzer.analyze(x), x)
    check()


@pytest.mark.parametrize("method", sorted(PERTURBATION))
def test_perturbation_methods_too(method):
    @SETTINGS
    @given(params=valid_params(list(PERTURBATION[method]), [], lime=method == "lime"), seed=st.integers(0, 1000))
    def check(params, seed):
        x = batch(seed)
        _check(run_perturbation(method, MODEL, x, params), x)
    check()


INVALID = st.one_of(st.just(float("nan")), st.just(float("inf")), st.just(-float("inf")), st.just(1e39),
                    st.just([1, 2]), st.just({"a": 1}), st.just(None))
OUT_OF_RANGE = {"epsilon": -1e-3, "gamma": -0.5, "stddev": 0.0, "seed": -1, "noise_scale": -1.0, "steps": 0,
                "augment_by_n": MAX_SAMPLES + 1, "chunk": -1, "postprocess": "cube", "pattern_type": "cubic",
                "beta": -1.0, "eps": 0.0, "noise": "host", "patch": 0, "stride": 0, "segment": 0, "samples": 1, "kernel_width": 0.0}


def declared(method) -> list[str]:
    """The method's parameters that are declared (by one of its rules, or as a method parameter)."""
    m = load_method(method)
    return [k for k in m.settable() if m.spec(k)[1] is not None]


WITH_PARAMETERS = [m for m in COMPILED if declared(m)]


@pytest.mark.parametrize("method", WITH_PARAMETERS)
def test_an_invalid_parameter_is_a_clear_error_before_compiling(method, monkeypatch):
    from nnxplain import compiler
    monkeypatch.setattr(compiler, "canonical_graph", _not_reached)  # the parameters are refused before
    m = load_method(method)
    keys = declared(method)

    @SETTINGS
    @given(key=st.sampled_from(keys), value=st.one_of(INVALID, st.sampled_from(keys).map(OUT_OF_RANGE.get)))
    def check(key, value):
        if value is None and key in OUT_OF_RANGE:
            value = OUT_OF_RANGE[key]
        if value is None:
            value = float("nan")
        if m.spec(key)[1].kind is list and value == [1, 2]:  # a valid list of bounds: make one entry invalid
            value = [1, float("nan")]
        with pytest.raises(nnxplain.NnxplainError, match=f"'{key}'"):
            nnxplain.compile(MODEL, [method], params={key: value})
    check()


def _not_reached(*args, **kwargs):
    raise AssertionError("an invalid parameter reached the compiler")
