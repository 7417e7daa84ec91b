"""Methods are data: a TOML file that says where the backward pass starts, which propagation rule
applies to which nodes, and the method's parameters. The built-in ones live in rules/; a user's own
file is used the same way (`--rules my_method.toml`)."""
from __future__ import annotations

import fnmatch
import importlib.resources
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import onnx_graphsurgeon as gs

from .errors import NnxplainError
from .patterns import PATTERN_TYPES
from .propagation import RULES, Rule

# Op groups a pattern can name instead of op types.
GROUPS = {
    "relu": {"Relu"},
    "activation": {"Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh"},
    "convolution": {"Conv"},
    "linear": {"Gemm", "MatMul"},
    "pooling": {"MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool", "ReduceMean"},
    "add": {"Add", "Sub"},
    "concat": {"Concat"},
}
KINDS = {"backward", "input", "random"}
STARTS = {"one", "value"}
POSTPROCESS = {"none", "abs", "square"}


@dataclass
class Pattern:
    ops: set[str] | None = None   # op types (groups expanded); None matches every op
    name: str | None = None       # fnmatch glob on the node name

    def matches(self, node: gs.Node) -> bool:
        return (self.ops is None or node.op in self.ops) and (self.name is None or fnmatch.fnmatch(node.name, self.name))


@dataclass
class RuleEntry:
    pattern: Pattern
    rule: str
    params: dict = field(default_factory=dict)


@dataclass
class Method:
    name: str
    description: str
    kind: str = "backward"
    start: str = "one"           # the backward pass starts from 1 ("one") or the output's value ("value")
    times_input: bool = False    # multiply the result by the input (Input*Gradient)
    params: dict = field(default_factory=dict)
    rules: list[RuleEntry] = field(default_factory=list)
    source: str = ""
    aliases: list[str] = field(default_factory=list)

    @property
    def needs(self) -> set[str]:
        """What the method's rules need from the compiler besides parameters (e.g. "patterns")."""
        return {need for entry in self.rules for need in RULES[entry.rule].needs}

    def with_params(self, overrides: dict) -> "Method":
        unknown = sorted(set(overrides) - set(self.params))
        if unknown:
            known = ", ".join(sorted(self.params)) or "none"
            raise NnxplainError(f"method '{self.name}' has no parameter '{unknown[0]}' (its parameters: {known})")
        params = {k: _coerce(self.name, k, v, self.params[k]) for k, v in overrides.items()}
        method = Method(**{**self.__dict__, "params": {**self.params, **params}})
        method.validate()
        return method

    def validate(self):
        post = self.params.get("postprocess", "none")
        if post not in POSTPROCESS:
            raise NnxplainError(f"method '{self.name}': postprocess must be one of {sorted(POSTPROCESS)}, got '{post}'")
        pattern_type = self.params.get("pattern_type", "relu")
        if pattern_type not in PATTERN_TYPES:
            raise NnxplainError(f"method '{self.name}': pattern_type must be one of {', '.join(PATTERN_TYPES)}, "
                                f"got '{pattern_type}'")

    def rule_for(self, node: gs.Node) -> tuple[str, Rule, dict]:
        """The first rule entry whose pattern matches the node; the op's gradient otherwise."""
        for entry in self.rules:
            if entry.pattern.matches(node):
                rule = RULES[entry.rule]
                if rule.ops is not None and node.op not in rule.ops:
                    raise NnxplainError(f"method '{self.name}': rule '{entry.rule}' matched node '{node.name}' "
                                        f"(op {node.op}) but applies only to {', '.join(sorted(rule.ops))}")
                return entry.rule, rule, entry.params
        return "gradient", RULES["gradient"], {}


def _coerce(method: str, key: str, value, default):
    """CLI values arrive as strings: give them the type of the method's default."""
    if not isinstance(value, str) or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return value.lower() in ("true", "1")
        return type(default)(value)
    except ValueError:
        raise NnxplainError(f"method '{method}': parameter '{key}' expects {type(default).__name__}, got '{value}'") from None


def builtin_dir() -> Path:
    try:
        return Path(str(importlib.resources.files("nnxplain.rules")))
    except ModuleNotFoundError:  # running from a source tree that is not installed
        return Path(__file__).resolve().parent.parent / "rules"


def available() -> list[str]:
    return sorted(p.name[:-len(".toml")] for p in builtin_dir().glob("*.toml"))


def aliases() -> dict[str, str]:
    """Other names of built-in methods (`patternattribution` -> `pattern.attribution`)."""
    out = {}
    for name in available():
        for alias in _read(builtin_dir() / f"{name}.toml").get("aliases", []):
            out[alias] = name
    return out


def load_method(name_or_path: str | os.PathLike) -> Method:
    """A built-in method by name (`gradient`) or alias, or a method file by path. A method loaded by
    an alias carries the alias as its name, so its output is named as the user asked."""
    path = Path(name_or_path)
    if not (path.suffix == ".toml" and path.is_file()):
        name = str(name_or_path)
        path = builtin_dir() / f"{aliases().get(name, name)}.toml"
        if not path.is_file():
            raise NnxplainError(f"unknown method '{name_or_path}' (available: {', '.join(available())})")
        if name in aliases():
            return parse_method(_read(path), default_name=name, source=str(path), name=name)
    return parse_method(_read(path), default_name=path.name[:-len(".toml")], source=str(path))


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise NnxplainError(f"{path}: not a readable method file ({exc})") from None


def parse_method(data: dict, default_name: str, source: str = "", name: str | None = None) -> Method:
    where = source or default_name
    allowed = {"name", "description", "kind", "start", "times_input", "params", "rule", "aliases"}
    extra = sorted(set(data) - allowed)
    if extra:
        raise NnxplainError(f"{where}: unknown key '{extra[0]}' (allowed: {', '.join(sorted(allowed))})")
    kind, start = data.get("kind", "backward"), data.get("start", "one")
    if kind not in KINDS:
        raise NnxplainError(f"{where}: kind must be one of {sorted(KINDS)}, got '{kind}'")
    if start not in STARTS:
        raise NnxplainError(f"{where}: start must be one of {sorted(STARTS)}, got '{start}'")
    entries = []
    for i, raw in enumerate(data.get("rule", [])):
        raw = dict(raw)
        rule = raw.pop("rule", None)
        if rule not in RULES:
            raise NnxplainError(f"{where}: rule entry {i + 1} names rule '{rule}' (known rules: {', '.join(sorted(RULES))})")
        ops = raw.pop("ops", None)
        pattern = Pattern(ops=None if ops is None else _expand(ops, where), name=raw.pop("name", None))
        entries.append(RuleEntry(pattern, rule, raw))
    method = Method(name=name or data.get("name", default_name), description=data.get("description", ""), kind=kind,
                    start=start, times_input=bool(data.get("times_input", False)),
                    params=dict(data.get("params", {})), rules=entries, source=source,
                    aliases=list(data.get("aliases", [])))
    method.validate()
    return method


def _expand(ops: list[str], where: str) -> set[str]:
    out = set()
    for op in ops:
        if op in GROUPS:
            out |= GROUPS[op]
        elif op[:1].isupper():
            out.add(op)
        else:
            raise NnxplainError(f"{where}: '{op}' is neither an op type nor a group ({', '.join(sorted(GROUPS))})")
    return out
