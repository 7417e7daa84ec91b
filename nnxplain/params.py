"""Method parameters: their types and ranges, checked in this one place when a method is resolved
(before anything is compiled or run), so that a parameter out of range is one clear error instead
of NaN explanations or a crash inside ONNX Runtime.

`check(where, key, value, spec)` converts a value (strings from the command line take the parameter's
type) and checks it against its Spec: a propagation rule declares the Specs of its parameters where it
is registered (nnxplain.rule_registry); the methods' own parameters are declared in PARAMS below. A
parameter nobody declares (one a method file invents for its own rule entries) must still be a plain
scalar, and a finite number if a number. `scoped(params, method, settable)` picks a method's
parameters out of the `key` / `method.key` ones a user gives for several methods at once.
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


REQUIRED = type("Required", (), {"__repr__": lambda self: "REQUIRED"})()  # a Spec's default: none, must be given


class Spec(NamedTuple):
    kind: type                            # float, int, bool, str, or list: a float or a list of floats
    ok: Callable[[object], bool] | None   # the range check (after the type check; each entry of a list)
    wants: str                            # what a valid value is, for the message
    default: object = REQUIRED            # a rule parameter's default (None: optional, no value)


POSTPROCESS = ("none", "abs", "square")


def _choices(*values):
    return Spec(str, lambda v: v in values, "one of " + ", ".join(values))


def number(default=REQUIRED, ok=None, wants="a finite number") -> Spec:
    return Spec(float, ok, wants, default)


def flag(default=REQUIRED) -> Spec:
    return Spec(bool, None, "true or false", default)


def numbers(default=REQUIRED, wants="a finite number, or a list of them like [-2.1,-1.9,-1.8] (one per input "
                                     "channel)") -> Spec:
    """A float broadcast over the input channels, or a list of floats, one per channel."""
    return Spec(list, None, wants, default)


# The methods' own parameters (a propagation rule's are declared where the rule is registered).
PARAMS: dict[str, Spec] = {
    "postprocess": _choices(*POSTPROCESS),
    "pattern_type": _choices(*PATTERN_TYPES),
    "stddev": Spec(float, lambda v: v > 0, "a finite number > 0"),
    "seed": Spec(int, lambda v: 0 <= v < 2 ** 63, "an integer from 0 to 2**63 - 1"),
    "reference_inputs": Spec(float, None, "a finite number"),
    "reference_token": Spec(int, lambda v: -1 <= v < 2 ** 63, "a token id (an integer >= 0), or -1 for none"),
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


def check(where: str, key: str, value, default=None, parse: bool = False, spec: Spec | None = None):
    """`value` as parameter `key` takes it, or a clear error naming `where` (the method, and the rule
    that declares the parameter) and what a valid value is. `spec`: the parameter's declaration (None:
    PARAMS's, if any). With `parse` (values from the command line) a string is converted to the
    parameter's type (for a parameter nobody declares, to the type of its `default`); a method file's
    values have their TOML types and are taken as they are."""
    spec = spec or PARAMS.get(key)
    if spec is None and parse and isinstance(value, str) and isinstance(default, (bool, int, float)):
        spec = Spec(type(default), None, f"a {type(default).__name__}")
    if spec is None:
        return _plain(where, key, value)
    if parse and isinstance(value, str) and spec.kind is not str:
        value = _parse(where, key, value, spec)
    if spec.kind is list:
        entries = list(value) if isinstance(value, (list, tuple)) else [value]
        good = bool(entries) and all(_finite_number(v) for v in entries) and not (
            spec.ok is not None and not all(spec.ok(float(v)) for v in entries))
        if good:
            return [float(v) for v in entries] if isinstance(value, (list, tuple)) else float(value)
        raise NnxplainError(f"{where}: parameter '{key}' must be {spec.wants}, got {show(value)}")
    if spec.kind is bool:
        good = isinstance(value, (bool, np.bool_))
        value = bool(value) if good else value
    elif spec.kind is int:
        good = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
        if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
            good, value = True, int(value)
        value = int(value) if good else value
    elif spec.kind is float:
        good = _finite_number(value)
        value = float(value) if good else value
    else:
        good = isinstance(value, str)
    if not good or (spec.ok is not None and not spec.ok(value)):
        raise NnxplainError(f"{where}: parameter '{key}' must be {spec.wants}, got {show(value)}")
    return value


def _finite_number(value) -> bool:
    """An int or a float (not a bool) that float32 holds: the graph holds it as float32."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)) \
        and math.isfinite(float(value)) and abs(float(value)) <= FLOAT32_MAX


def _parse(where, key, text, spec):
    if spec.kind is list:  # `-2` or `[-2.1,-1.9,-1.8]`
        inner = text.strip()
        bracketed = inner.startswith("[") and inner.endswith("]")
        try:
            values = [float(v) for v in inner[1:-1].split(",")] if bracketed else float(inner)
        except ValueError:
            raise NnxplainError(f"{where}: parameter '{key}' must be {spec.wants}, got '{text}'") from None
        return values
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


def scoped(params: dict, method: str, settable) -> dict:
    """The parameters of method `method` among `params` (given for several methods at once): each
    `method.key`, and each plain `key` the method has (`settable`); `method.key` wins over `key`."""
    out = {key: value for key, value in params.items() if own_key(key, method, settable) == key}
    out.update({own_key(key, method, settable): value for key, value in params.items()
                if key.rpartition(".")[0] == method})
    return out


def own_key(key: str, method: str, settable) -> str | None:
    """The name parameter `key` (`key` or `method.key`) has in method `method`, or None if it is not
    the method's: a `method.key` always is (an unknown key is then the method's error to report; the
    key is what follows the last dot, so `deep_taylor.bounded.low` is not deep_taylor's), a plain `key`
    when the method has it."""
    scope, _, name = key.rpartition(".")
    if scope == method:
        return name
    return key if key in settable else None


def check_sampling(where: str, params: dict, inputs: str):
    """A sampling method's samples split into at most MAX_BLOCKS blocks of `chunk`."""
    total = params.get("augment_by_n" if inputs == "noise" else "steps")
    chunk = params.get("chunk", 0)
    if isinstance(total, int) and isinstance(chunk, int) and chunk and -(-total // chunk) > MAX_BLOCKS:
        raise NnxplainError(f"{where}: {total} samples in blocks of chunk={chunk} make {-(-total // chunk)} copies of "
                            f"the model in the graph; give chunk >= {-(-total // MAX_BLOCKS)} (at most {MAX_BLOCKS} "
                            f"blocks)")
