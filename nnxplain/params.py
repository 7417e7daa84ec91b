"""Method parameters: their types and ranges, checked in this one place when a method is resolved
(before anything is compiled or run), so that a parameter out of range is one clear error instead
of NaN explanations or a crash inside ONNX Runtime.

`check(where, key, value)` converts a value (strings from the command line take the parameter's
type) and checks it; `check_rule(where, rule, params)` checks what depends on several parameters of
one rule (alpha - beta = 1, low <= high). A parameter this table does not know (one a method file
invents for its own rule entries) must still be a plain scalar, and a finite number if a number.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from .errors import NnxplainError
from .patterns import PATTERN_TYPES

# Sampling methods fold their samples into the batch; past this many the graph and the noise input
# are too large to be a sensible request (64 is iNNvestigate's default, Captum's IG uses 50).
MAX_SAMPLES = 1 << 16
MAX_BLOCKS = 256  # each block of `chunk` samples is a copy of the forward and backward pass in the graph
FLOAT32_MAX = float(np.finfo(np.float32).max)


class Spec(NamedTuple):
    kind: type                            # float, int, bool or str
    ok: Callable[[object], bool] | None   # the range check (after the type check)
    wants: str                            # what a valid value is, for the message


POSTPROCESS = ("none", "abs", "square")


def _choices(*values):
    return Spec(str, lambda v: v in values, "one of " + ", ".join(values))


PARAMS: dict[str, Spec] = {
    # propagation rules
    "epsilon": Spec(float, lambda v: v >= 0, "a finite number >= 0 (0: the z-rule with its safe division)"),
    "gamma": Spec(float, lambda v: v >= 0, "a finite number >= 0"),
    "alpha": Spec(float, None, "a finite number"),
    "beta": Spec(float, lambda v: v >= 0, "a finite number >= 0"),
    "low": Spec(float, None, "a finite number"),
    "high": Spec(float, None, "a finite number"),
    "eps": Spec(float, lambda v: v > 0, "a finite number > 0"),
    "ignore_bias": Spec(bool, None, "true or false"),
    "bias_split": Spec(bool, None, "true or false"),
    # methods
    "postprocess": _choices(*POSTPROCESS),
    "pattern_type": _choices(*PATTERN_TYPES),
    "stddev": Spec(float, lambda v: v > 0, "a finite number > 0"),
    "seed": Spec(int, lambda v: 0 <= v < 2 ** 63, "an integer from 0 to 2**63 - 1"),
    "reference_inputs": Spec(float, None, "a finite number"),
    "noise": Spec(str, lambda v: v in ("graph", "input"),
                  "'graph' (generated in the graph from the seed) or 'input' (fed as the input '<method>/noise')"),
    "noise_scale": Spec(float, lambda v: v >= 0, "a finite number >= 0"),
    "steps": Spec(int, lambda v: 1 <= v <= MAX_SAMPLES, f"at least 1 and at most {MAX_SAMPLES} (an integer)"),
    "augment_by_n": Spec(int, lambda v: 1 <= v <= MAX_SAMPLES, f"at least 1 and at most {MAX_SAMPLES} (an integer)"),
    "chunk": Spec(int, lambda v: 0 <= v <= MAX_SAMPLES,
                  f"at least 0 (0: all samples at once) and at most {MAX_SAMPLES} (an integer)"),
    # occlusion and lime (nnxplain.perturbation)
    "patch": Spec(int, lambda v: v >= 1, "an integer >= 1"),
    "stride": Spec(int, lambda v: v >= 1, "an integer >= 1"),
    "fill": Spec(float, None, "a finite number"),
    "segment": Spec(int, lambda v: v >= 1, "an integer >= 1"),
    "samples": Spec(int, lambda v: 2 <= v <= MAX_SAMPLES, f"at least 2 and at most {MAX_SAMPLES} (an integer)"),
    "kernel_width": Spec(float, lambda v: v > 0, "a finite number > 0"),
}


def check(where: str, key: str, value, default=None, parse: bool = False):
    """`value` as parameter `key` takes it, or a clear error naming `where` (the method) and what a
    valid value is. With `parse` (values from the command line) a string is converted to the
    parameter's type (for a parameter this table does not know, to the type of its `default`); a
    method file's values have their TOML types and are taken as they are."""
    spec = PARAMS.get(key)
    if spec is None and parse and isinstance(value, str) and isinstance(default, (bool, int, float)):
        spec = Spec(type(default), None, f"a {type(default).__name__}")
    if spec is None:
        return _plain(where, key, value)
    if parse and isinstance(value, str) and spec.kind is not str:
        value = _parse(where, key, value, spec)
    if spec.kind is bool:
        good = isinstance(value, (bool, np.bool_))
        value = bool(value) if good else value
    elif spec.kind is int:
        good = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
        if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
            good, value = True, int(value)
        value = int(value) if good else value
    elif spec.kind is float:
        good = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
        if good:
            value = float(value)
            good = math.isfinite(value) and abs(value) <= FLOAT32_MAX  # the graph holds it as float32
    else:
        good = isinstance(value, str)
    if not good or (spec.ok is not None and not spec.ok(value)):
        raise NnxplainError(f"{where}: parameter '{key}' must be {spec.wants}, got {show(value)}")
    return value


def _parse(where, key, text, spec):
    if spec.kind is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise NnxplainError(f"{where}: parameter '{key}' must be {spec.wants}, got '{text}'")
    try:
        return spec.kind(text)
    except ValueError:
        raise NnxplainError(f"{where}: parameter '{key}' expects {spec.kind.__name__}, got '{text}' "
                            f"(it must be {spec.wants})") from None


def _plain(where, key, value):
    if isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float) and math.isfinite(value) and abs(value) <= FLOAT32_MAX:
        return value
    raise NnxplainError(f"{where}: parameter '{key}' must be a finite number, a string or true/false, got "
                        f"{show(value)}")


def show(value) -> str:
    """A value as a message shows it: strings quoted, anything long cut."""
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 60 else text[:57] + "..."


def check_rule(where: str, rule: str, params: dict):
    """What depends on several parameters of one rule entry (its own parameters over the method's)."""
    if rule == "alpha_beta":
        from .lrp import alpha_beta_params
        try:
            alpha_beta_params(params.get("alpha"), params.get("beta"))
        except ValueError as exc:
            raise NnxplainError(f"{where}: {exc}") from None
    if rule == "bounded" and "low" in params and "high" in params and not params["low"] <= params["high"]:
        raise NnxplainError(f"{where}: rule 'bounded' needs low <= high, got low={params['low']}, high={params['high']}")


def check_sampling(where: str, params: dict, inputs: str):
    """A sampling method's samples split into at most MAX_BLOCKS blocks of `chunk`."""
    total = params.get("augment_by_n" if inputs == "noise" else "steps")
    chunk = params.get("chunk", 0)
    if isinstance(total, int) and isinstance(chunk, int) and chunk and -(-total // chunk) > MAX_BLOCKS:
        raise NnxplainError(f"{where}: {total} samples in blocks of chunk={chunk} make {-(-total // chunk)} copies of "
                            f"the model in the graph; give chunk >= {-(-total // MAX_BLOCKS)} (at most {MAX_BLOCKS} "
                            f"blocks)")
