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

from . import params as params_
from .errors import NnxplainError
from .ops import groups
from .propagation import RULES, Rule

# Op groups a pattern can name instead of op types: each op's category and the groups its record
# names (nnxplain/ops): relu, activation, convolution, linear (Gemm, MatMul), pooling, add, routing, ...
GROUPS = groups()
KINDS = {"backward", "input", "random", "sampling", "perturbation"}  # perturbation: no graph (nnxplain.perturbation)
STARTS = {"one", "value", "positive_value"}
POSITIONS = {"first", "last"}


@dataclass
class Pattern:
    ops: set[str] | None = None   # op types (groups expanded); None matches every op
    name: str | None = None       # fnmatch glob on the node name
    position: str | None = None   # "first": linear layers reached from the input through no other linear
                                  # layer; "last": those the output is reached from through no other one

    def matches(self, node: gs.Node, positions: dict | None = None) -> bool:
        if self.position is not None and id(node) not in (positions or {}).get(self.position, ()):
            return False
        return (self.ops is None or node.op in self.ops) and (self.name is None or fnmatch.fnmatch(node.name, self.name))

    def describe(self) -> str:
        parts = ([f"ops {'/'.join(sorted(self.ops))}"] if self.ops is not None else []) + \
                ([f"name '{self.name}'"] if self.name is not None else []) + \
                ([f"position '{self.position}'"] if self.position is not None else [])
        return ", ".join(parts) or "every node"


@dataclass
class RuleEntry:
    pattern: Pattern
    rule: str
    params: dict = field(default_factory=dict)
    index: int = 0                # 1-based position in its file
    source: str = ""


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
    required: list[str] = field(default_factory=list)  # float parameters without a default, to be given
    optional: list[str] = field(default_factory=list)  # float parameters without a default, may be given
    strict: bool = False          # every node on the backward path must match a rule entry
    default: str = "gradient"     # the rule of nodes no entry matches (when not strict)
    aliases: list[str] = field(default_factory=list)
    base: str | None = None       # kind "sampling": the method whose explanations are sampled
    sampling: dict = field(default_factory=dict)  # kind "sampling": inputs (noise|path), reduce (mean|variance|mean_times_delta)
    perturbation: str | None = None  # kind "perturbation": the algorithm (nnxplain.perturbation.ALGORITHMS)

    def base_method(self) -> "Method":
        """A sampling method's base method, with the parameters of this method that it has."""
        base = load_method(self.base)
        return base.with_params({k: v for k, v in self.params.items() if k in base.settable()})

    @property
    def needs(self) -> set[str]:
        """What the method's rules need from the compiler besides parameters (e.g. "patterns")."""
        if self.kind == "sampling":
            return load_method(self.base).needs
        return {need for entry in self.rules for need in RULES[entry.rule].needs}

    def settable(self) -> list[str]:
        return sorted(set(self.params) | set(self.required) | set(self.optional))

    def with_params(self, overrides: dict) -> "Method":
        unknown = sorted(set(overrides) - set(self.settable()))
        if unknown:
            known = ", ".join(self.settable()) or "none"
            raise NnxplainError(f"method '{self.name}' has no parameter '{unknown[0]}' (its parameters: {known})")
        params = {k: self.check_param(k, v, parse=True) for k, v in overrides.items()}
        method = Method(**{**self.__dict__, "params": {**self.params, **params}})
        method.validate(final=True)
        return method

    def spec(self, key: str) -> tuple[str | None, params_.Spec | None]:
        """(the rule that declares parameter `key`, its declaration) among the rules the method uses
        (a sampling method: its base method's); else (None, nnxplain.params.PARAMS's, if any)."""
        if self.kind == "sampling" and self.base is not None and key not in params_.PARAMS:
            return load_method(self.base).spec(key)
        for rule in [entry.rule for entry in self.rules] + [self.default]:
            if key in RULES[rule].params:
                return rule, RULES[rule].params[key]
        return None, params_.PARAMS.get(key)

    def check_param(self, key: str, value, parse: bool = False):
        """`value` as parameter `key` takes it (converted and checked through its declaration), or an
        error naming the method, the rule that declares the parameter, and what a valid value is."""
        rule, spec = self.spec(key)
        where = f"method '{self.name}'" + (f" (rule '{rule}')" if rule else "")
        return params_.check(where, key, value, self.params.get(key), parse=parse, spec=spec)

    def validate(self, final: bool = False):
        """Every parameter's type and range (nnxplain.params); once all are given (final), that none
        is missing and what each rule entry's parameters must satisfy together."""
        where = f"method '{self.name}'"
        self.params = {k: self.check_param(k, v) for k, v in self.params.items()}
        missing = [k for k in self.required if k not in self.params]
        if not final:
            return
        if missing:
            raise NnxplainError(f"method '{self.name}' needs parameter '{missing[0]}' (give --param {missing[0]}=VALUE, "
                                f"or {missing[0]}=... to create_analyzer)")
        if self.kind == "sampling":
            params_.check_sampling(where, self.params, self.sampling["inputs"])
        for entry in self.rules:
            rule = RULES[entry.rule]
            effective = {**rule.defaults(), **self.rule_params(entry)}
            entry_where = f"{where} ({entry.source} entry {entry.index})"
            absent = [k for k in rule.required() if k not in effective]
            if absent:
                raise NnxplainError(f"{entry_where}: rule '{entry.rule}' needs parameter '{absent[0]}' (set it in the "
                                    f"entry or in [params])")
            if rule.check is not None:
                try:
                    rule.check(effective)
                except ValueError as exc:
                    raise NnxplainError(f"{entry_where}: {exc}") from None

    def rule_params(self, entry: RuleEntry) -> dict:
        """The parameters rule entry `entry` sets, else the method's parameters its rule declares."""
        declared = RULES[entry.rule].params
        return {**{k: v for k, v in self.params.items() if k in declared}, **entry.params}

    def rule_for(self, node: gs.Node, positions: dict | None = None) -> tuple[str, Rule, dict]:
        """The first rule entry whose pattern matches the node, and the rule's parameters: those the
        entry sets, else the method's parameters of the same name (the rule adds its defaults). Nodes no
        entry matches get the method's default rule (the op's gradient), or an error if it is strict."""
        for entry in self.rules:
            if entry.pattern.matches(node, positions):
                rule = RULES[entry.rule]
                if rule.ops is not None and node.op not in rule.ops:
                    raise NnxplainError(f"method '{self.name}': rule '{entry.rule}' ({entry.source} entry {entry.index}: "
                                        f"{entry.pattern.describe()}) matched node '{node.name}' (op {node.op}) but "
                                        f"applies only to {', '.join(sorted(rule.ops))}")
                return entry.rule, rule, self.rule_params(entry)
        if self.strict:
            raise NnxplainError(f"method '{self.name}': node '{node.name}' (op {node.op}) is matched by no rule entry "
                                f"(expected one of: {'; '.join(e.pattern.describe() for e in self.rules)})")
        return self.default, RULES[self.default], {}

    def check_patterns(self, graph: gs.Graph, positions: dict):
        """A rule entry that names nodes (by glob or position) must match at least one node."""
        for entry in self.rules:
            if entry.pattern.name is None and entry.pattern.position is None:
                continue
            if not any(entry.pattern.matches(n, positions) for n in graph.nodes):
                raise NnxplainError(f"method '{self.name}': {entry.source} entry {entry.index} "
                                    f"({entry.pattern.describe()}) matches no node of the model")


def builtin_dir() -> Path:
    try:
        return Path(str(importlib.resources.files("nnxplain.rules")))
    except ModuleNotFoundError:  # running from a source tree that is not installed
        return Path(__file__).resolve().parent.parent / "rules"


def available() -> list[str]:
    """Built-in methods; files whose name starts with '_' are shared parts that methods include."""
    return sorted(p.name[:-len(".toml")] for p in builtin_dir().glob("*.toml") if not p.name.startswith("_"))


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
    path = _find(name_or_path)
    if path is None:  # an alias? (only names that are no file and no built-in get this far)
        name = str(name_or_path)
        canonical = aliases().get(name)
        if canonical is not None:
            path = builtin_dir() / f"{canonical}.toml"
            return parse_method(_read(path), default_name=name, source=str(path), name=name)
    if path is None:
        raise unknown_method(name_or_path)
    return parse_method(_read(path), default_name=path.name[:-len(".toml")], source=str(path))


def unknown_method(name_or_path) -> NnxplainError:
    """The error for a name that is no built-in method, alias or method file: a missing file is named
    as such, a misspelled name gets the closest one."""
    import difflib
    name = str(name_or_path)
    if name.endswith(".toml") or os.sep in name:
        return NnxplainError(f"method file '{name}' does not exist")
    close = difflib.get_close_matches(name, available() + sorted(aliases()), n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    perturbation = [m for m in available() if load_method(m).kind == "perturbation"]
    compiled = [m for m in available() if m not in perturbation]
    return NnxplainError(f"unknown method '{name}'{hint} (built-in: {', '.join(compiled)}; with analyze and "
                         f"evaluate also {', '.join(perturbation)})")


def _find(name_or_path) -> Path | None:
    """A method given on the command line or to create_analyzer: a .toml file (relative to the working
    directory, as any path a user types), else a built-in method."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        return path
    builtin = builtin_dir() / f"{name_or_path}.toml"
    return builtin if builtin.is_file() else None


def _find_part(name: str, folder: Path | None) -> Path | None:
    """What a method file's `include` or `base` names: a .toml file relative to that file's own folder
    (never the working directory, so a method means the same wherever it is run), else a built-in."""
    path = Path(name)
    if folder is not None and path.suffix == ".toml" and (folder / path).is_file():
        return folder / path
    builtin = builtin_dir() / f"{name}.toml"
    return builtin if "/" not in name and "\\" not in name and builtin.is_file() else None


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise NnxplainError(f"{path}: not a readable method file ({exc})") from None


# The type of each top-level key of a method file (a list: a list of that type; a tuple: any of them).
KEY_TYPES = {"name": str, "description": str, "kind": str, "start": str, "times_input": bool, "params": dict,
             "rule": [dict], "include": (str, list), "required": [str], "optional": [str], "strict": bool,
             "default": str, "aliases": [str], "base": str, "sampling": dict, "perturbation": str}
TYPE_NAMES = {str: "a string", bool: "true or false", dict: "a table", list: "a list"}


def _check_types(data: dict, where: str):
    """Each key of a method file has the type it must have: `strict = "no"` is an error, not true."""
    for key, want in KEY_TYPES.items():
        if key not in data:
            continue
        value = data[key]
        if isinstance(want, list):
            ok = isinstance(value, list) and all(isinstance(v, want[0]) for v in value)
            wanted = f"a list of {TYPE_NAMES[want[0]].replace('a ', '', 1)}s"
        elif isinstance(want, tuple):
            ok = isinstance(value, want) and (not isinstance(value, list) or all(isinstance(v, str) for v in value))
            wanted = "a string or a list of strings"
        else:
            ok = isinstance(value, want)
            wanted = TYPE_NAMES[want]
        if not ok:
            raise NnxplainError(f"{where}: {key} must be {wanted}, got {params_.show(value)}")


def parse_method(data: dict, default_name: str, source: str = "", _including: tuple = (),
                 name: str | None = None) -> Method:
    where = source or default_name
    allowed = set(KEY_TYPES)
    extra = sorted(set(data) - allowed)
    if extra:
        raise NnxplainError(f"{where}: unknown key '{extra[0]}' (allowed: {', '.join(sorted(allowed))})")
    _check_types(data, where)
    kind, start = data.get("kind"), data.get("start")
    if kind is not None and kind not in KINDS:
        raise NnxplainError(f"{where}: kind must be one of {sorted(KINDS)}, got '{kind}'")
    if start is not None and start not in STARTS:
        raise NnxplainError(f"{where}: start must be one of {sorted(STARTS)}, got '{start}'")
    default = data.get("default", "gradient")
    if default not in RULES:
        raise NnxplainError(f"{where}: default names rule '{default}' (known rules: {', '.join(sorted(RULES))})")
    params = dict(data.get("params", {}))  # checked through the rules' declarations once the entries are read
    required, optional = list(data.get("required", [])), list(data.get("optional", []))
    for key in required + optional:
        if key in params:
            raise NnxplainError(f"{where}: parameter '{key}' is listed as required/optional and also has a default")
    entries = []
    for i, raw in enumerate(data.get("rule", [])):
        entries.append(_entry(dict(raw), i + 1, where, set(params) | set(required) | set(optional)))
    strict = data.get("strict", False)
    base_dir = Path(source).parent if source else None
    for included in ([data["include"]] if isinstance(data.get("include"), str) else data.get("include", [])):
        path = _find_part(included, base_dir)
        if path is None:
            raise NnxplainError(f"{where}: include '{included}' is neither a file beside it nor a built-in part")
        if str(path) in _including:
            raise NnxplainError(f"{where}: include '{included}' includes itself")
        part = parse_method(_read(path), default_name=path.name[:-len(".toml")], source=str(path),
                            _including=_including + (str(path),))
        entries += part.rules  # the including file's entries come first: the first match wins
        params = {**part.params, **params}
        required += [k for k in part.required if k not in required and k not in params]
        optional += [k for k in part.optional if k not in optional and k not in params]
        strict = strict or part.strict
        kind = kind or part.kind
        start = start or part.start
    kind, start = kind or "backward", start or "one"
    base, sampling = data.get("base"), dict(data.get("sampling", {}))
    if kind == "sampling":
        base, sampling, params, required, optional = _sampling(where, base, sampling, params, required, optional,
                                                               _including, base_dir)
    elif base is not None or sampling:
        raise NnxplainError(f"{where}: 'base' and [sampling] belong to methods of kind 'sampling'")
    perturbation = data.get("perturbation")
    if kind == "perturbation":
        _check_perturbation(where, perturbation, params, entries)
    elif perturbation is not None:
        raise NnxplainError(f"{where}: 'perturbation' belongs to methods of kind 'perturbation'")
    method = Method(name=name or data.get("name", default_name), description=data.get("description", ""), kind=kind,
                    start=start, times_input=data.get("times_input", False), params=params, rules=entries,
                    source=source, required=required, optional=optional, strict=strict, default=default,
                    aliases=list(data.get("aliases", [])), base=base, sampling=sampling, perturbation=perturbation)
    method.validate()
    return method


def _sampling(where, base, sampling, params, required, optional, including, base_dir):
    """Check a sampling method's base and [sampling] table; it takes on the base method's parameters
    (its own defaults win)."""
    from .sampling import INPUTS, REDUCE
    if not isinstance(base, str):
        raise NnxplainError(f"{where}: a method of kind 'sampling' names its base method (base = \"gradient\")")
    extra = sorted(set(sampling) - {"inputs", "reduce"})
    if extra:
        raise NnxplainError(f"{where}: [sampling] has unknown key '{extra[0]}' (allowed: inputs, reduce)")
    if sampling.get("inputs") not in INPUTS:
        raise NnxplainError(f"{where}: [sampling] inputs must be one of {sorted(INPUTS)}, got '{sampling.get('inputs')}'")
    if sampling.get("reduce") not in REDUCE:
        raise NnxplainError(f"{where}: [sampling] reduce must be one of {sorted(REDUCE)}, got '{sampling.get('reduce')}'")
    needed = ["augment_by_n", "noise_scale", "seed"] if sampling["inputs"] == "noise" else ["steps"]
    missing = [k for k in needed if k not in params]
    if missing:
        raise NnxplainError(f"{where}: a sampling method with inputs '{sampling['inputs']}' needs parameter "
                            f"'{missing[0]}' in [params]")
    path = _find_part(base, base_dir)
    if path is None or str(path) in including:
        raise NnxplainError(f"{where}: base method '{base}' is unknown (available: {', '.join(available())})")
    inner = parse_method(_read(path), default_name=path.name[:-len(".toml")], source=str(path),
                         _including=including + (str(path),))
    if inner.kind == "sampling":
        raise NnxplainError(f"{where}: base method '{base}' is itself a sampling method")
    if inner.kind != "backward":
        raise NnxplainError(f"{where}: base method '{base}' has no backward pass to sample (kind '{inner.kind}')")
    params = {**inner.params, **params}
    if sampling["inputs"] == "noise":
        params.setdefault("noise", "graph")  # where the noise comes from: generated in the graph, or an input
    required = required + [k for k in inner.required if k not in required and k not in params]
    optional = optional + [k for k in inner.optional if k not in optional and k not in params]
    return str(path), sampling, params, required, optional


def _check_perturbation(where, algorithm, params, entries):
    """A method of kind "perturbation" names its algorithm and gives all of its parameters a default."""
    import inspect

    from .perturbation import ALGORITHMS
    if algorithm not in ALGORITHMS:
        raise NnxplainError(f"{where}: a method of kind 'perturbation' names its algorithm: perturbation = one of "
                            f"{', '.join(ALGORITHMS)} (got {params_.show(algorithm)})")
    if entries:
        raise NnxplainError(f"{where}: a method of kind 'perturbation' has no rule entries (it runs no backward pass)")
    accepted = {p.name for p in list(inspect.signature(ALGORITHMS[algorithm]).parameters.values())[2:]} - \
        {"neuron", "progress", "scorer", "segments"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise NnxplainError(f"{where}: {algorithm} has no parameter '{unknown[0]}' (its parameters: "
                            f"{', '.join(sorted(accepted))})")


def _entry(raw: dict, index: int, where: str, method_params: set) -> RuleEntry:
    rule = raw.pop("rule", None)
    if not isinstance(rule, str) or rule not in RULES:
        raise NnxplainError(f"{where}: rule entry {index} names rule {params_.show(rule)} "
                            f"(known rules: {', '.join(sorted(RULES))})")
    ops, name, position = raw.pop("ops", None), raw.pop("name", None), raw.pop("position", None)
    if ops is not None and not (isinstance(ops, list) and all(isinstance(op, str) for op in ops)):
        raise NnxplainError(f"{where}: rule entry {index}: ops must be a list of op types or groups, "
                            f"got {params_.show(ops)}")
    if name is not None and not isinstance(name, str):
        raise NnxplainError(f"{where}: rule entry {index}: name must be a string (a glob), got {params_.show(name)}")
    if position is not None and position not in POSITIONS:
        raise NnxplainError(f"{where}: rule entry {index}: position must be one of {sorted(POSITIONS)}, "
                            f"got {params_.show(position)}")
    pattern = Pattern(ops=None if ops is None else _expand(ops, where), name=name, position=position)
    declared = RULES[rule].params
    unknown = sorted(set(raw) - set(declared))
    if unknown:
        raise NnxplainError(f"{where}: rule entry {index}: rule '{rule}' has no parameter '{unknown[0]}' "
                            f"(its parameters: {', '.join(declared) or 'none'})")
    params = {k: params_.check(f"{where}: rule entry {index}", k, v, spec=declared[k])
              for k, v in raw.items()}
    return RuleEntry(pattern, rule, params, index=index, source=Path(where).name)


def positions(graph: gs.Graph, inputs: list, output) -> dict[str, set[int]]:
    """The nodes (by id) at each position: "first", the linear layers reached from an input through no
    other linear layer (their activation input); "last", those from which the output is reached
    through no other linear layer."""
    from .ops import LINEAR

    def is_linear(node):
        return node.op in LINEAR and LINEAR[node.op](node) is not None

    first, seen, todo = set(), set(), [t for t in inputs]
    while todo:
        t = todo.pop()
        for node in t.outputs:
            if is_linear(node):
                if node.inputs[LINEAR[node.op](node).x] is t:
                    first.add(id(node))
                continue
            if id(node) not in seen:
                seen.add(id(node))
                todo.extend(node.outputs)
    last, seen, todo = set(), set(), [output]
    while todo:
        t = todo.pop()
        for node in t.inputs:
            if is_linear(node):
                last.add(id(node))
                continue
            if id(node) not in seen:
                seen.add(id(node))
                todo.extend(i for i in node.inputs if not isinstance(i, gs.Constant))
    return {"first": first, "last": last}


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
