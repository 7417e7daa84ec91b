"""The command line: nnxplain compile | analyze | methods | support."""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .compiler import NEURON_INPUT, SELECTION_MODES, compile, resolve_methods
from .errors import NnxplainError
from .patterns import PATTERN_TYPES
from .runtime import load_array


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except NnxplainError as exc:
        print(f"nnxplain: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug of ours: one line, and the traceback only on request
        if os.environ.get("NNXPLAIN_DEBUG"):
            raise
        print(f"nnxplain: internal error: {type(exc).__name__}: {exc} (set NNXPLAIN_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnxplain", description="Compile ONNX models into ONNX explainers.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def common(p, several=True):
        p.add_argument("model", help="the ONNX model to explain")
        p.add_argument("--method", "-m", action="append", default=[], required=False,
                       help="a method name (see `nnxplain methods`)" + ("; repeat for several" if several else ""))
        p.add_argument("--rules", action="append", default=[], metavar="FILE.toml", help="a method file of your own")
        p.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                       help="a method parameter, `key=value` or `method.key=value`")
        p.add_argument("--neuron-selection", choices=SELECTION_MODES, default="max_activation",
                       help="which output neuron to explain (default: max_activation)")
        p.add_argument("--output", "--output-name", dest="output_name", metavar="NAME",
                       help="the model output to explain (default: the first); every float input gets its relevance")
        p.add_argument("--keep-softmax", action="store_true", help="explain the softmax output instead of the scores")
        p.add_argument("--patterns", metavar="PATTERNS.npz", help="fitted patterns (pattern.net, pattern.attribution)")
        p.add_argument("--fit-data", metavar="TRAIN.npy", help="fit the patterns on this data first (one step)")
        fitting(p)

    def fitting(p):
        p.add_argument("--pattern-type", choices=PATTERN_TYPES,
                       help="the estimator to fit (default: the method's pattern_type, relu)")
        p.add_argument("--batch-size", type=int, default=256, help="samples per run while fitting (default: 256)")

    p = sub.add_parser("compile", help="write an explainer ONNX model")
    common(p)
    p.add_argument("-o", "--out", required=True, help="the explainer .onnx to write")
    p.set_defaults(run=_compile)

    p = sub.add_parser("analyze", help="compile and run: explain the inputs in a .npy file")
    common(p, several=False)
    p.add_argument("--input", "-i", required=True, help="input batch (.npy, or .npz with an array 'x')")
    p.add_argument("--neuron", type=int, action="append", help="output index to explain (with --neuron-selection index)")
    p.add_argument("-o", "--out", required=True, help="where to write the explanation (.npy)")
    p.set_defaults(run=_analyze)

    p = sub.add_parser("fit", help="fit the patterns of PatternNet / PatternAttribution")
    p.add_argument("model", help="the ONNX model")
    p.add_argument("--data", required=True, metavar="TRAIN.npy", help="training inputs (.npy, or .npz with 'x')")
    fitting(p)
    p.add_argument("-o", "--out", required=True, help="the patterns file to write (.npz)")
    p.set_defaults(run=_fit)

    p = sub.add_parser("methods", help="list the built-in methods")
    p.set_defaults(run=_methods)

    p = sub.add_parser("support", help="which nodes and methods a model supports")
    p.add_argument("model")
    p.add_argument("--method", "-m", action="append", default=[], help="methods to check (default: all)")
    p.set_defaults(run=_support)
    return parser


def _params(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise NnxplainError(f"--param '{pair}' is not of the form key=value")
        params[key.strip()] = value.strip()
    return params


def _methods_of(args) -> list:
    methods = list(args.method) + list(args.rules)
    if not methods:
        raise NnxplainError("give at least one --method (see `nnxplain methods`) or --rules FILE")
    return methods


def _compile_args(args):
    methods, params = _methods_of(args), _params(args.param)
    return compile(args.model, methods, neuron_selection=args.neuron_selection, params=params,
                   output=args.output_name, keep_softmax=args.keep_softmax,
                   patterns=_patterns_for(args, resolve_methods(methods, params)))


def _patterns_for(args, methods):
    """The --patterns file, or patterns fitted on --fit-data with the pattern methods' estimator."""
    if args.patterns and args.fit_data:
        raise NnxplainError("give either --patterns or --fit-data, not both")
    if not args.fit_data:
        return args.patterns
    wanting = [m for m in methods if "patterns" in m.needs]
    if not wanting:
        raise NnxplainError("--fit-data is for methods that need patterns (pattern.net, pattern.attribution)")
    types = {m.params.get("pattern_type", "relu") for m in wanting}
    if args.pattern_type is None and len(types) > 1:
        raise NnxplainError(f"the methods ask for different pattern types ({', '.join(sorted(types))}); "
                            f"choose one with --pattern-type")
    return _fit_patterns(args, args.fit_data, args.pattern_type or types.pop())


def _fit_patterns(args, data, pattern_type):
    from .patterns import fit
    patterns = fit(args.model, load_array(data), pattern_type=pattern_type, batch_size=args.batch_size,
                   progress=sys.stderr.isatty())
    return patterns


def _fit(args):
    patterns = _fit_patterns(args, args.data, args.pattern_type or "relu")
    patterns.save(args.out)
    print(f"wrote {args.out} ({patterns.pattern_type} patterns of {len(patterns.rows)} layers, "
          f"fitted on {patterns.samples} samples)")


def _compile(args):
    from .runtime import write_atomic
    model = _compile_args(args)
    write_atomic(args.out, model.SerializeToString())
    outputs = ", ".join(o.name for o in model.graph.output)
    print(f"wrote {args.out} (outputs: {outputs})")


def _analyze(args):
    from .runtime import check_feed, session, write_atomic
    if len(_methods_of(args)) != 1:
        raise NnxplainError("analyze takes exactly one method")
    x = load_array(args.input)
    model = _compile_args(args)
    sess = session(model)
    inputs = [m for m in sess.get_inputs() if m.name != NEURON_INPUT]
    if len(inputs) != 1:
        raise NnxplainError(f"the model has {len(inputs)} inputs; analyze takes models with one")
    feeds = {inputs[0].name: check_feed(inputs[0], x)}
    if args.neuron_selection == "index":
        if not args.neuron:
            raise NnxplainError("--neuron-selection index needs --neuron N")
        neurons = args.neuron if len(args.neuron) > 1 else args.neuron * len(x)
        if len(neurons) != len(x):
            raise NnxplainError(f"--neuron given {len(neurons)} times for a batch of {len(x)}")
        feeds[NEURON_INPUT] = np.asarray(neurons, np.int64)
    elif args.neuron:
        raise NnxplainError("--neuron needs --neuron-selection index")
    name = model.graph.output[-1].name
    result = sess.run([name], feeds)[0]
    if not args.out.endswith(".npy"):
        raise NnxplainError(f"-o {args.out}: analyze writes .npy files")
    import io
    buffer = io.BytesIO()
    np.save(buffer, result)
    write_atomic(args.out, buffer.getvalue())
    print(f"wrote {args.out} ({name}, shape {list(result.shape)}, providers {', '.join(sess.get_providers())})")


def _methods(args):
    from .methods import available, load_method
    for name in available():
        method = load_method(name)
        params = ", ".join([f"{k}={v}" for k, v in method.params.items()] + [f"{k} (required)" for k in method.required]
                           + [f"{k} (optional)" for k in method.optional])
        aka = f" (also: {', '.join(method.aliases)})" if method.aliases else ""
        print(f"{name:<24} {method.description}{aka}" + (f" [{params}]" if params else ""))


def _support(args):
    import onnx_graphsurgeon as gs

    from .backward import depends_on
    from .canonicalize import canonicalize
    from .compiler import explained_inputs, explained_output
    from .load import load
    from .methods import available, load_method, positions
    from .support import method_support

    model = canonicalize(load(args.model))
    graph = gs.import_onnx(model)
    methods = [load_method(m) for m in (args.method or available())]  # required parameters: reported below
    live = depends_on(graph, explained_inputs(graph))
    where = positions(graph, explained_inputs(graph), explained_output(graph, None))
    backward = [m for m in methods if m.kind == "backward"]
    width = max([len(n.name or "") for n in graph.nodes] + [10])
    print("rule each method applies at each node (after canonicalization); NO: it cannot")
    print(f"  {'node':<{width}} {'op':<18} " + " ".join(f"{m.name:<16}" for m in backward))
    for node in graph.nodes:
        cells = [_support_cell(m, node, live, where) for m in backward]
        print(f"  {node.name or '(unnamed)':<{width}} {node.op:<18} " + " ".join(f"{c:<16}" for c in cells))
    print("methods:")
    failures = 0
    for method in methods:
        ok, note = method_support(model, method)
        if ok:
            print(f"  {method.name:<24} applicable" + (f" ({note})" if note else ""))
        else:
            failures += 1
            print(f"  {method.name:<24} not applicable: {note}")
    return 1 if failures == len(methods) else 0


def _support_cell(method, node, live, where=None) -> str:
    from .ops import VJP
    if not any(t.name in live for t in node.inputs):
        return "-"  # not between the input and the output: no backward needed
    try:
        name, rule, _ = method.rule_for(node, where)
    except NnxplainError:
        return "NO (rule)"
    return name if name != "gradient" or node.op in VJP else "NO ADAPTER"
