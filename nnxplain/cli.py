"""The command line: nnxplain compile | analyze | fit | evaluate | bench | prototype | methods | support."""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from ._version import __version__
from .compiler import NEURON_INPUT, SELECTION_MODES, compile, resolve_methods
from .errors import InternalError, NnxplainError, NnxplainWarning
from .params import scoped
from .patterns import PATTERN_TYPES


REPORT = ("this is a bug in nnxplain: please report it with the command line, the model if you can share it, "
          "and the traceback (set NNXPLAIN_DEBUG=1 to see it)")


def main(argv=None) -> int:
    """Exit status: 0 done, 2 a problem with the input (one line on stderr, `nnxplain: error: ...`),
    3 a bug of nnxplain's (one line asking for a report), 130 interrupted."""
    parser = _parser()
    if not (sys.argv[1:] if argv is None else argv):  # bare `nnxplain`: the commands, not just a usage line
        parser.print_help()
        return 2
    args = parser.parse_args(argv)
    import warnings
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            code = args.run(args) or 0
            sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
            return code
        except BrokenPipeError:  # `nnxplain methods | head`: the reader has gone, nothing more to say
            _silence_stdout()
            return 141
        except InternalError as exc:
            return _internal(exc)
        except NnxplainError as exc:
            print(f"nnxplain: error: {one_line(exc)}", file=sys.stderr)
            return 2
        except MemoryError:
            print("nnxplain: error: out of memory (a smaller batch, fewer samples or a smaller model may fit)",
                  file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130
        except Exception as exc:  # a bug of ours: one line, and the traceback only on request
            return _internal(exc)


def _internal(exc) -> int:
    if os.environ.get("NNXPLAIN_DEBUG"):
        raise exc
    what = one_line(exc) if isinstance(exc, InternalError) else f"{type(exc).__name__}: {one_line(exc)}"
    print(f"nnxplain: internal error: {what} -- {REPORT}", file=sys.stderr)
    return 3


def one_line(exc) -> str:
    """A message on one line: newlines and other control characters (in a node name, say) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(exc))


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, NnxplainWarning):
        print(f"nnxplain: warning: {one_line(message)}", file=sys.stderr)


def _silence_stdout():
    """Point stdout at /dev/null so that Python's final flush does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnxplain", description="Compile ONNX models into ONNX explainers.",
                                     epilog="`nnxplain COMMAND -h` describes a command's options.")
    parser.add_argument("--version", action="version", version=f"nnxplain {__version__}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND", title="commands")

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
        p.add_argument("--position", metavar="last|N",
                       help="for an output [batch, positions, scores]: the position whose scores are explained "
                            "(last, or an index; negative counts from the end; default: last for a causal "
                            "language model, required for other sequence outputs)")
        p.add_argument("--keep-softmax", action="store_true", help="explain the softmax output instead of the scores")
        p.add_argument("--wrt", metavar="NAME", help="what to explain: a float input, or for token models an int input "
                       "read by an embedding lookup, or the lookup's table or output (default: the float inputs, else "
                       "the word embeddings: the lookup with the largest table)")
        p.add_argument("--per-dimension", action="store_true", help="embeddings: also output <method>/per_dimension, "
                       "the relevance per token and hidden dimension (<method> sums it over the hidden dimension)")
        p.add_argument("--patterns", metavar="PATTERNS.npz", help="fitted patterns (pattern.net, pattern.attribution)")
        p.add_argument("--fit-data", metavar="TRAIN.npy", help="fit the patterns on this data first (one step)")
        fitting(p)

    def fitting(p):
        p.add_argument("--pattern-type", choices=PATTERN_TYPES,
                       help="the estimator to fit (default: the method's pattern_type, relu)")
        p.add_argument("--batch-size", type=int, default=256, help="samples per run (default: 256)")
        datasets(p)

    p = sub.add_parser("compile", help="write an explainer ONNX model")
    common(p)
    p.add_argument("-o", "--out", required=True, help="the explainer .onnx to write")
    p.add_argument("--external-data", action="store_true", default=None,
                   help="write the weights to OUT.data beside the .onnx (automatic above protobuf's 2 GiB)")
    p.add_argument("--store-shapes", action="store_true",
                   help="store every intermediate tensor's shape, for ONNX Runtime: deep explainers then load "
                        "in linear time (not for engines that fix the input shape first, e.g. tract)")
    p.set_defaults(run=_compile)

    p = sub.add_parser("analyze", help="compile and run: explain the inputs (an array or a folder of images)")
    common(p, several=False)
    p.add_argument("--input", "-i", required=True,
                   help="the inputs: .npy, .npz with an array 'x', a folder of images or a glob")
    p.add_argument("--select", metavar="INDICES",
                   help="explain only these inputs: indices and inclusive ranges, comma-separated (0-11: the "
                        "first twelve; 0,5,7-9), or Python slices (:12, 100:, ::30)")
    p.add_argument("--neuron", type=int, action="append",
                   help="output index to explain (with --neuron-selection index; without it, the data's labels)")
    p.add_argument("-o", "--out", help="where to write the explanations: a folder (shards, any number of inputs), "
                                       ".npy (one array) or .png (a picture)")
    p.add_argument("--float16", action="store_true", help="store the explanations in the folder as float16")
    p.add_argument("--pictures", action="store_true", help="also draw one PNG per input into the folder's pictures/")
    p.add_argument("--grid", metavar="GRID.png",
                   help="draw inputs times methods (several --method allowed), with predicted class and score")
    p.add_argument("--picture", choices=("heatmap", "graymap", "project", "overlay"),
                   help="how to draw (default: a signed heatmap; project for signal methods on colour inputs)")
    p.add_argument("--reduce", choices=("sum", "norm"), default="sum", help="channel reduction (default: sum)")
    p.add_argument("--percentile", type=float, default=99.0, metavar="P",
                   help="full colour at the P-th percentile of |value|, larger values saturate (default: 99; "
                        "100: the maximum)")
    p.add_argument("--normalize", choices=("image", "method"), default="image",
                   help="colour scale per picture (image, the default) or one per method over all inputs (method)")
    p.add_argument("--outline", action="store_true", help="draw the input's outline over each explanation")
    p.add_argument("--tokenizer", metavar="TOKENIZER.json",
                   help="text: decode the input_ids into the tokens drawn (a Hugging Face tokenizer.json)")
    p.set_defaults(run=_analyze)

    p = sub.add_parser("fit", help="fit the patterns of PatternNet / PatternAttribution")
    p.add_argument("model", help="the ONNX model")
    p.add_argument("--data", required=True, metavar="TRAIN",
                   help="training inputs: .npy, .npz with 'x', a folder of images or a glob")
    fitting(p)
    p.add_argument("-o", "--out", required=True, help="the patterns file to write (.npz)")
    p.set_defaults(run=_fit)

    p = sub.add_parser("evaluate", help="perturbation analysis (pixel flipping): AOPC per method, curves as PNG and CSV")
    p.add_argument("model", help="the ONNX model")
    p.add_argument("--method", "-m", action="append", default=[], help="a method to evaluate; repeat for several")
    p.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                   help="a method parameter, `key=value` or `method.key=value`")
    p.add_argument("--data", required=True, metavar="X",
                   help="images [N, C, H, W]: .npy, .npz with 'x', a folder of images or a glob; for a token model "
                        "an .npz holding its inputs by name (input_ids, attention_mask, ...)")
    p.add_argument("--batch-size", type=int, default=64, help="images (texts) per batch (default: 64)")
    datasets(p)
    p.add_argument("--region", type=int, help="region side in pixels (default: 9, at most a quarter of the image side)")
    p.add_argument("--steps", type=int, help="regions (tokens) to perturb (default: all)")
    p.add_argument("--perturbation", choices=("mean", "zeros", "gaussian", "invert"),
                   help="how a region is perturbed (default: zeros)")
    p.add_argument("--mask-token", type=int, metavar="ID", help="token models: the id that replaces the most "
                   "relevant tokens (e.g. the [MASK] or pad id; required there)")
    p.add_argument("--position", metavar="last|N", help="token models with an output [batch, positions, scores]: "
                   "the position explained and scored (as compile's --position; default: last for a causal "
                   "language model)")
    p.add_argument("--patterns", metavar="PATTERNS.npz", help="fitted patterns (pattern.net, pattern.attribution)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random ordering and of gaussian noise")
    p.add_argument("-o", "--out", default="perturbation", metavar="NAME",
                   help="writes NAME.png (the curves) and NAME.csv (default: perturbation)")
    p.set_defaults(run=_evaluate)

    p = sub.add_parser("bench", help="per method: compile time, explainer time / forward time, peak memory (+ Captum)")
    p.add_argument("model", help="the ONNX model")
    p.add_argument("--method", "-m", action="append", default=[],
                   help="a method to time; repeat for several (default: gradient, integrated_gradients)")
    p.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                   help="a method parameter, `key=value` or `method.key=value`")
    p.add_argument("--batch", type=int, default=8, help="batch size of the random input (default: 8)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per session (default: 5)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default: 0, its choice)")
    p.add_argument("--torch", metavar="MODULE:FUNCTION",
                   help="a function of the model path returning its torch twin, to time Captum on the same weights "
                        "(default: onnx2torch where installed)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--json", metavar="OUT.json", help="also write the results as JSON")
    p.set_defaults(run=_bench)

    p = sub.add_parser("prototype", help="activation maximization: the input that maximizes one output neuron")
    p.add_argument("model", help="the ONNX model")
    p.add_argument("--neuron", required=True, metavar="NEURONS",
                   help="the output neuron(s) to maximize: 3, 0-9, 0,3,5 (several: one labelled picture of all)")
    p.add_argument("--data", metavar="TRAIN.npz",
                   help="inputs of the data (.npy, or .npz with 'x'): start at their mean, keep near it (--l2) and "
                        "add their Gaussian density as a prior (--prior), so the prototype looks like the data")
    p.add_argument("--steps", type=int, default=200, help="gradient ascent steps (default: 200)")
    p.add_argument("--lr", type=float, default=0.05, help="step size as a fraction of the input range (default: 0.05)")
    p.add_argument("--l2", type=float, default=0.01,
                   help="L2 penalty on the distance to the data mean (to 0 without --data) (default: 0.01)")
    p.add_argument("--prior", type=float, default=0.5, help="weight of the data's log density (with --data; default: 0.5)")
    p.add_argument("--blur", type=float, default=0.0, metavar="SIGMA",
                   help="smooth the prototype by a Gaussian of SIGMA pixels every 10 steps (default: 0, off)")
    p.add_argument("--jitter", type=int, default=0, metavar="PIXELS",
                   help="shift the input randomly by up to PIXELS while taking each gradient (default: 0, off)")
    p.add_argument("--low", type=float, help="input range, lower end (default: the data's minimum, else 0)")
    p.add_argument("--high", type=float, help="input range, upper end (default: the data's maximum, else 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting point's noise and of the jitter")
    p.add_argument("-o", "--out", required=True, metavar="PROTO.png",
                   help="the picture (.png); the array [neurons, *input dims] goes beside it as .npy")
    p.set_defaults(run=_prototype)

    p = sub.add_parser("methods", help="list the built-in methods")
    p.set_defaults(run=_methods)

    p = sub.add_parser("support", help="which nodes and methods a model supports")
    p.add_argument("model")
    p.add_argument("--method", "-m", action="append", default=[], help="methods to check (default: all)")
    p.set_defaults(run=_support)
    return parser


def datasets(p):
    """Options of the commands that read data: preprocessing of images, bad files, the engine."""
    from .data import CHANNELS, LAYOUTS, PRESETS
    g = p.add_argument_group("images (for a folder or glob of images; see the README's Datasets)")
    g.add_argument("--preprocess", choices=list(PRESETS), help="a preset (imagenet: resize 256, crop 224, "
                   "scale 1/255, ImageNet mean and std, RGB, NCHW); the options below change it")
    g.add_argument("--resize", metavar="N|HxW", help="shorter side to N pixels, or to exactly HxW")
    g.add_argument("--crop", metavar="N|HxW", help="center crop, N x N or H x W")
    g.add_argument("--scale", type=float, help="multiply the pixels (0..255) by this (default 1/255)")
    g.add_argument("--mean", metavar="M1,M2,M3", help="subtract, per channel (after --scale)")
    g.add_argument("--std", metavar="S1,S2,S3", help="divide by, per channel")
    g.add_argument("--channels", choices=CHANNELS, help="channel order (default: rgb, gray for 1-channel models)")
    g.add_argument("--layout", choices=LAYOUTS, help="nchw (default) or nhwc")
    g.add_argument("--skip-bad", action="store_true", help="skip unreadable or wrong-sized images (and non-image "
                   "files), and count them, instead of stopping at the first")
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default: this process) or ray (pip install 'nnxplain[ray]')")
    g.add_argument("--ray-address", metavar="ADDRESS", help="an existing Ray cluster (default: start a local one)")
    g.add_argument("--workers", type=int, help="Ray actors (default: the cluster's CPUs / --threads)")
    g.add_argument("--threads", type=int, help="ONNX Runtime threads per worker (default: local one per core, "
                   "ray 1)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs each Ray actor asks for (default 0)")


def _dataset(args, spec):
    """The dataset at `spec`, preprocessed for the model's input as the options say."""
    from .data import open_dataset, parse_floats, parse_size, preprocess_from
    options = {"resize": args.resize and parse_size(args.resize), "crop": args.crop and parse_size(args.crop),
               "scale": args.scale, "mean": args.mean and parse_floats(args.mean),
               "std": args.std and parse_floats(args.std), "channels": args.channels, "layout": args.layout}
    given = args.preprocess is not None or any(v is not None for v in options.values())
    preprocess = preprocess_from(args.preprocess, **options) if given else None
    return open_dataset(spec, preprocess, expect=_input_shape(args.model), skip_bad=args.skip_bad)


def _input_shape(model) -> tuple | None:
    """One sample's shape as the model's (first) input takes it: ints, None where a dim is open."""
    from .load import load
    proto = load(model)
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if not inputs or not inputs[0].type.tensor_type.HasField("shape"):
        return None
    dims = inputs[0].type.tensor_type.shape.dim[1:]
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)


def _engine(args):
    from .engine import engine
    return engine(args.engine, address=args.ray_address, workers=args.workers, threads=args.threads,
                  gpus=args.gpus_per_worker)


def _report_skipped(skipped, where=""):
    if skipped:
        path, reason = skipped[0]
        print(f"skipped {len(skipped)} bad file{'s' if len(skipped) > 1 else ''}{where} "
              f"(the first: {path}: {reason})")


def _suffix(path: str, suffix: str, what: str):
    """-o must name a file (checked first, before any work) and name it as what it is: a file written
    under another extension misleads."""
    from .runtime import check_output_name
    check_output_name(path)
    if not str(path).lower().endswith(suffix):
        raise NnxplainError(f"-o {path}: {what} is written as {suffix}; name the file *{suffix}")


def _params(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise NnxplainError(f"--param '{pair}' is not of the form key=value")
        params[key.strip()] = value.strip()
    return params


def _methods_of(args) -> list:
    for path in args.rules:
        if not os.path.isfile(path):
            raise NnxplainError(f"--rules {path}: no such file" if not os.path.exists(path) else
                                f"--rules {path}: not a file")
    methods = list(args.method) + list(args.rules)
    if not methods:
        raise NnxplainError("give at least one --method (see `nnxplain methods`) or --rules FILE")
    return methods


def _compile_args(args):
    methods, params = _methods_of(args), _params(args.param)
    return compile(args.model, methods, neuron_selection=args.neuron_selection, params=params,
                   output=args.output_name, keep_softmax=args.keep_softmax,
                   patterns=_patterns_for(args, resolve_methods(methods, params)),
                   wrt=getattr(args, "wrt", None), per_dimension=getattr(args, "per_dimension", False),
                   position=getattr(args, "position", None))


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
    from .engine import fit
    patterns, skipped = fit(args.model, _dataset(args, data), pattern_type=pattern_type, batch_size=args.batch_size,
                            engine=_engine(args), progress=sys.stderr.isatty())
    _report_skipped(skipped)
    return patterns


def _fit(args):
    _suffix(args.out, ".npz", "the patterns file (an npz archive)")
    patterns = _fit_patterns(args, args.data, args.pattern_type or "relu")
    patterns.save(args.out)
    skipped = f"; {patterns.skipped} samples with NaN or inf skipped" if patterns.skipped else ""
    print(f"wrote {args.out} ({patterns.pattern_type} patterns of {len(patterns.rows)} layers, "
          f"fitted on {patterns.samples} samples{skipped})")


def _compile(args):
    from .modelfile import save
    _suffix(args.out, ".onnx", "the explainer (an ONNX model)")
    model = _compile_args(args)
    if args.store_shapes:
        from .portable import store_shapes
        store_shapes(model)
    written = save(model, args.out, external_data=args.external_data)
    outputs = ", ".join(o.name for o in model.graph.output)
    print(f"wrote {' and '.join(written)} (outputs: {outputs})")


def _analyze(args):
    from .compiler import neuron_feed, output_size
    from .runtime import check_feed, session, warn_nonfinite, write_atomic
    from .sampling import NOISE_SUFFIX
    methods = _methods_of(args)
    if len(methods) != 1 and not args.grid:
        raise NnxplainError("analyze takes exactly one method (several with --grid GRID.png)")
    from .text import is_text
    if is_text(args.model, args.input, args.tokenizer):
        return _analyze_text(args, methods)
    if args.out is None and args.grid is None:
        raise NnxplainError("give -o OUT.npy, -o OUT.png or --grid GRID.png")
    if args.out is not None and len(methods) != 1:
        raise NnxplainError("-o writes one method's explanation; with several methods use --grid alone")
    if args.grid is not None and not args.grid.endswith(".png"):
        raise NnxplainError(f"--grid {args.grid}: the grid is a .png picture")
    folder = args.out is not None and not args.out.endswith((".npy", ".png"))
    if folder and os.path.splitext(args.out.rstrip("/"))[1] and not os.path.isdir(args.out):
        raise NnxplainError(f"-o {args.out}: analyze writes .npy (the array) or .png (a picture), or a folder "
                            f"(a name without an extension) of explanation shards")
    if not folder and (args.float16 or args.pictures):
        raise NnxplainError("--float16 and --pictures are for -o FOLDER (explanations written as shards)")
    if folder:
        return _analyze_folder(args, methods)
    if args.engine != "local":
        raise NnxplainError("--engine ray writes to a folder: give -o FOLDER (read it with nnxplain.read_explanations)")
    from .methods import load_method
    from .perturbation import is_perturbation
    data = _dataset(args, args.input).read_all()
    x = data.x
    _report_skipped(data.skipped)
    if not 0 < args.percentile <= 100:
        raise NnxplainError(f"--percentile {args.percentile:g}: give a value in (0, 100]")
    indices = list(range(len(x))) if args.select is None else parse_selection(args.select, len(x))
    if args.select is not None:
        x = x[indices]
    if len(x) == 0 and (args.grid or args.out.endswith(".png")):
        raise NnxplainError(f"{args.input}: holds no samples, nothing to draw")
    sampled = [m for m in methods if is_perturbation(m)]  # run on perturbed copies (occlusion, lime): no graph
    compiled = [m for m in methods if m not in sampled]
    sampled_names = {m: load_method(m).name for m in sampled}  # a method file's name is not its path
    params = _params(args.param)
    neurons = None
    if args.neuron_selection == "index":
        if not args.neuron:
            raise NnxplainError("--neuron-selection index needs --neuron N")
        if len(args.neuron) not in (1, len(x)):
            raise NnxplainError(f"--neuron given {len(args.neuron)} times for a batch of {len(x)}")
        neurons = neuron_feed(args.neuron, len(x), None)  # whole numbers in range: the output's size below
    elif args.neuron:
        raise NnxplainError("--neuron needs --neuron-selection index")
    if sampled and args.position is not None:
        raise NnxplainError(f"method '{sampled[0]}' explains outputs [batch, scores]; --position is for the compiled methods")
    if sampled and args.neuron_selection == "all":
        raise NnxplainError(f"method '{sampled[0]}' explains one output per sample (max_activation or index)")
    perturbation_keys = {k for m in sampled for k in load_method(m).settable()}
    graph_keys = {k for m in compiled for k in load_method(m).settable()}
    unknown = [k for k in params if "." not in k and k not in perturbation_keys | graph_keys]
    if unknown:
        known = {m: load_method(m).settable() for m in methods}
        raise NnxplainError(f"parameter '{unknown[0]}' belongs to none of the methods "
                            f"({'; '.join(f'{m}: ' + (', '.join(keys) or 'none') for m, keys in known.items())})")
    results, names, providers = {}, [], "CPUExecutionProvider"
    if compiled:
        args.method, args.rules = [m for m in args.method if m in compiled], [m for m in args.rules if m in compiled]
        graph_params = {k: v for k, v in params.items() if not any(k.startswith(m + ".") for m in sampled_names.values())
                        and ("." in k or k in graph_keys)}
        args.param = [f"{k}={v}" for k, v in graph_params.items()]
        model = _compile_args(args)
        sess = session(model)
        inputs = [m for m in sess.get_inputs() if m.name != NEURON_INPUT and not m.name.endswith(NOISE_SUFFIX)]
        if len(inputs) != 1:
            raise NnxplainError(f"the model has {len(inputs)} inputs; analyze takes models with one")
        feeds = {inputs[0].name: check_feed(inputs[0], x)}
        x = feeds[inputs[0].name]
        seeds = {method.name: method.params.get("seed", 0) for method in resolve_methods(compiled, graph_params)}
        names = [o.name for o in model.graph.output][-len(compiled):]
        explained = args.output_name or model.graph.output[0].name
        if neurons is not None:
            feeds[NEURON_INPUT] = neuron_feed(args.neuron, len(x), output_size(sess, explained))
        warn_nonfinite(x, args.input)
        if len(x):
            scores, results = _run_batched(sess, [explained] + names, feeds, inputs[0].name, args.batch_size, seeds)
        else:  # nothing to explain; ONNX Runtime's NCHWc layout optimizer fails on an empty batch
            scores = np.zeros((0, output_size(sess, explained) or 0), np.float32)
            results = {name: np.zeros(x.shape, np.float32) for name in names}
        providers = ", ".join(sess.get_providers())
    if sampled:
        from .perturbation import run
        from .scores import Scorer
        scorer = Scorer(args.model)
        x = np.asarray(x, np.float32)
        scores = scorer(x)
        if neurons is not None:
            neurons = neuron_feed(args.neuron, len(x), scores.shape[1])
        if not compiled:
            warn_nonfinite(x, args.input)
        for path, name in sampled_names.items():
            own = scoped(params, name, load_method(path).settable())
            results[name] = run(path, args.model, x, own, neuron=neurons, progress=sys.stderr.isatty())
        names = [sampled_names[m] if m in sampled else names[compiled.index(m)] for m in methods]
        results = {n: results[n] for n in names}
    from . import visualize as vis
    scores = np.asarray(scores).reshape(len(x), -1) if len(x) else np.zeros((0, 0), np.float32)
    drawn = min(len(x), vis.MAX_PICTURES)
    cut = (f"the first {drawn} of {len(x)} inputs drawn (choose others with --select)"
           if drawn < len(x) else "")
    if args.out is not None or args.grid is not None:
        labels = _picture_labels(indices[:drawn], scores[:drawn], neurons, data.labels)
    if args.out is not None:
        name, result = names[0], results[names[0]]
        if args.out.endswith(".npy"):
            import io
            buffer = io.BytesIO()
            np.save(buffer, result)
            data = buffer.getvalue()
        else:
            data = vis.explanation_png(x[:drawn], result[:drawn], name, labels, args.picture, args.reduce,
                                       args.percentile, args.normalize, note=cut, outline=args.outline)
        write_atomic(args.out, data)
        drawn_note = f"; {cut}" if cut and not args.out.endswith(".npy") else ""
        print(f"wrote {args.out} ({name}, shape {list(result.shape)}, providers {providers}{drawn_note})")
    if args.grid is not None:
        kinds = {n: args.picture for n in names} if args.picture else None
        write_atomic(args.grid, vis.grid_png(x[:drawn], {n: r[:drawn] for n, r in results.items()}, labels, kinds,
                                             args.reduce, args.percentile, args.normalize, note=cut,
                                             outline=args.outline))
        print(f"wrote {args.grid} ({drawn} inputs x {len(names)} methods" + (f"; {cut})" if cut else ")"))


def _analyze_text(args, methods):
    """analyze on text (nnxplain/text.py): the model's inputs by name from an .npz; -o .html or .png
    draws a token heatmap, -o .npy writes the explanation as the explainer gives it."""
    from . import text, visualize as vis
    from .compiler import neuron_feed, output_size, position_of
    from .perturbation import is_perturbation
    from .runtime import check_output_name, session, write_atomic
    from .sampling import NOISE_SUFFIX
    if len(methods) != 1 or args.grid or is_perturbation(methods[0]):
        raise NnxplainError("analyze on text takes one compiled method (not --grid, occlusion or lime)")
    if args.out is None or not args.out.endswith((".html", ".png", ".npy")):
        raise NnxplainError(f"-o {args.out}: analyze on text writes .html or .png (a token heatmap) or .npy "
                            f"(the explanation)")
    check_output_name(args.out)
    tokenizer = text.load_tokenizer(args.tokenizer) if args.tokenizer else None
    model = _compile_args(args)
    sess = session(model)
    metas = [m for m in sess.get_inputs() if m.name != NEURON_INPUT and not m.name.endswith(NOISE_SUFFIX)]
    feeds, tokens = text.read_inputs(args.input, metas)
    count = len(feeds[metas[0].name])
    indices = list(range(count)) if args.select is None else parse_selection(args.select, count)
    feeds = {k: v[indices] for k, v in feeds.items()}
    tokens = None if tokens is None else tokens[indices]
    if not indices:
        raise NnxplainError(f"{args.input}: holds no texts, nothing to explain")
    position, explained = position_of(model), args.output_name or model.graph.output[0].name
    method = resolve_methods(methods, _params(args.param))[0]
    # the method's first output: `<method>`, or `<method>/<input>` for several float inputs (not its
    # `<method>/per_dimension` beside `<method>`)
    name = next(o.name for o in model.graph.output if o.name.split("/")[0] in (method.name, method.name + "_explanation"))
    neurons = None
    if args.neuron_selection == "index":
        if not args.neuron:
            raise NnxplainError("--neuron-selection index needs --neuron N")
        neurons = neuron_feed(args.neuron, len(indices), output_size(sess, explained, position))
        feeds[NEURON_INPUT] = neurons
    elif args.neuron:
        raise NnxplainError("--neuron needs --neuron-selection index")
    # the noise of noise=input follows the explained input: a float one, or the ids an embedding looks up
    import json
    named = json.loads({p.key: p.value for p in model.metadata_props}.get("nnxplain.explained_inputs", "[]"))
    explained_input = next((n for n in named if n in feeds), metas[0].name)
    scores, results = _run_batched(sess, [explained, name], feeds, explained_input, args.batch_size,
                                   {method.name: method.params.get("seed", 0)})
    relevance = results[name]
    if args.out.endswith(".npy"):
        import io
        buffer = io.BytesIO()
        np.save(buffer, relevance)
        data = buffer.getvalue()
    else:
        per_token = text.per_token(relevance, name)
        texts, values = text.attended(feeds, text.token_texts(feeds, tokens, tokenizer, per_token.shape[1]),
                                      per_token)
        scores = scores[:, position] if position is not None else scores.reshape(len(scores), -1)
        labels = [label.replace("\n", "  ") for label in _picture_labels(indices, scores, neurons, None)]
        where = "" if position is None else f" at position {position}" + (" (the last)" if position == -1 else "")
        title = name + where
        draw = vis.token_html if args.out.endswith(".html") else vis.token_png
        data = draw(texts, values, labels, title=title, percentile=args.percentile)
    write_atomic(args.out, data)
    print(f"wrote {args.out} ({name}, shape {list(relevance.shape)}, {len(indices)} texts, "
          f"providers {', '.join(sess.get_providers())})")


def parse_selection(text: str, count: int | None, option: str = "--select") -> list[int]:
    """Indices into a batch of `count` from a comma-separated list of indices (5), inclusive ranges
    (0-11) and Python slices (:12, 100:, ::30, -10:). Without a count (the neurons of a model not yet
    read) only indices and ranges."""
    import re
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if re.fullmatch(r"\d+", item):
            chosen = [int(item)]
        elif re.fullmatch(r"\d+-\d+", item):
            first, last = (int(v) for v in item.split("-"))
            if last < first:
                raise NnxplainError(f"{option} {text}: range '{item}' ends before it starts")
            chosen = list(range(first, last + 1))
        elif re.fullmatch(r"-?\d*:-?\d*(:-?\d+)?", item) and count is not None:
            parts = [int(v) if v else None for v in item.split(":")]
            if len(parts) == 3 and parts[2] == 0:
                raise NnxplainError(f"{option} {text}: slice '{item}' has step 0")
            chosen = list(range(count))[slice(*parts)]
            if not chosen:
                raise NnxplainError(f"{option} {text}: slice '{item}' selects nothing from {count} inputs")
        else:
            forms = "an index (5), a range (0-11) or a slice (:12)" if count is not None else "an index (5) or a range (0-9)"
            raise NnxplainError(f"{option} {text}: '{item}' is not {forms}")
        beyond = [i for i in chosen if count is not None and i >= count]
        if beyond:
            raise NnxplainError(f"{option} {text}: index {beyond[0]} is beyond the {count} inputs (0..{count - 1})")
        out += chosen
    if not out:
        raise NnxplainError(f"{option} {text}: selects no input")
    return out


def _picture_labels(indices, scores, neurons, truth) -> list[str]:
    """Per drawn input: its index in the input, its true class where the data has one ('y' in an .npz,
    the class folder of an image; -1: none), the explained class and its score."""
    truth = None if truth is None or not (np.asarray(truth) >= 0).any() else np.asarray(truth)
    labels = []
    for k, (i, row) in enumerate(zip(indices, scores)):
        explained = int(neurons[k]) if neurons is not None else int(np.argmax(row))
        word = "explained" if neurons is not None else "predicted"
        head = f"#{i}" + (f"  true {truth[i]}" if truth is not None and i < len(truth) else "")
        labels.append(f"{head}\n{word} {explained}: {float(row[explained]):.3g}")
    return labels


def _run_batched(sess, outputs, feeds, name, batch_size, seeds):
    """The explainer run on `feeds` batch by batch (memory: one batch's intermediates), each batch's
    noise for input `name` from its seed (`data.batch_seed`): (scores, {output: explanation})."""
    from .data import batch_seed
    from .runtime import run
    from .sampling import noise_feeds
    if batch_size < 1:
        raise NnxplainError(f"--batch-size must be at least 1, got {batch_size}")
    parts = []
    for index, start in enumerate(range(0, len(feeds[name]), batch_size)):
        part = {k: v[start:start + batch_size] for k, v in feeds.items()}
        part.update(noise_feeds(sess, part[name], {m: batch_seed(s, index) for m, s in seeds.items()}))
        parts.append(run(sess, outputs, part))
    outs = [np.concatenate(column) for column in zip(*parts)]
    return outs[0], dict(zip(outputs[1:], outs[1:]))


def _analyze_folder(args, methods):
    """analyze -o FOLDER: stream the dataset through the explainer on the engine, into shards."""
    from . import visualize as vis
    from .engine import analyze
    from .perturbation import is_perturbation
    if len(methods) != 1 or args.grid:
        raise NnxplainError("-o FOLDER writes one method's explanations; --grid draws from -o .npy/.png runs")
    if is_perturbation(methods[0]):
        raise NnxplainError(f"method '{methods[0]}' writes -o .npy or .png (occlusion and lime are not streamed)")
    dataset = _dataset(args, args.input)
    neurons = None
    if args.neuron_selection == "index":
        if not args.neuron and not dataset.has_labels:
            raise NnxplainError("--neuron-selection index needs --neuron N, or data with labels "
                                "(an ImageFolder, or an .npz with an array 'y')")
        neurons = "labels" if not args.neuron else args.neuron[0] if len(args.neuron) == 1 else args.neuron
    elif args.neuron:
        raise NnxplainError("--neuron needs --neuron-selection index")
    method = methods[0]
    engine = _engine(args)
    kind = (args.picture or vis.default_kind(resolve_methods(methods, _params(args.param))[0].name)) \
        if args.pictures else None
    index = analyze(args.model, method, dataset, args.out, args.batch_size, engine, args.neuron_selection, neurons,
                    _params(args.param), float16=args.float16, pictures=kind, reduce=args.reduce,
                    progress=sys.stderr.isatty(), explainer=_compile_args(args), output=args.output_name)
    dtype = index["dtype"]
    skipped = [(s["source"], s["reason"]) for s in index["skipped"]]
    print(f"wrote {args.out} ({index['count']} explanations of {index['method']} in {len(index['parts'])} parts, "
          f"{dtype}{', with pictures' if args.pictures else ''}; engine {engine.name})")
    _report_skipped(skipped, " (listed in index.json)")


def _evaluate(args):
    from .engine import evaluate
    from .evaluate import csv_bytes, plot_bytes, summary, table
    from .runtime import write_files
    if not args.method:
        raise NnxplainError("give at least one --method to evaluate (the random baseline always runs)")
    from .text import is_text
    base = args.out[:-4] if args.out.endswith((".png", ".csv")) else args.out
    if is_text(args.model, args.data, None):
        result = _evaluate_text(args)
    else:
        if args.mask_token is not None or args.position is not None:
            raise NnxplainError("--mask-token and --position are for token models (int ids in); this one takes "
                                "images")
        result, skipped = evaluate(args.model, args.method, _dataset(args, args.data), batch_size=args.batch_size,
                                   engine=_engine(args), progress=sys.stderr.isatty(), region=args.region,
                                   steps=args.steps, perturbation=args.perturbation or "zeros",
                                   params=_params(args.param), seed=args.seed, patterns=args.patterns)
        _report_skipped(skipped)
    write_files({base + ".png": plot_bytes(result), base + ".csv": csv_bytes(result)})  # both or neither
    print(summary(result))
    print(table(result))
    print(f"wrote {base}.png and {base}.csv")


def _evaluate_text(args) -> dict:
    """evaluate on a token model: its inputs by name from the .npz, tokens replaced by --mask-token."""
    from .evaluate import evaluate_tokens
    for option, given in (("--region", args.region is not None), ("--perturbation", args.perturbation is not None),
                          ("--engine ray", args.engine != "local")):
        if given:
            raise NnxplainError(f"{option} is for images; a token model's tokens are replaced by --mask-token ID "
                                f"(locally)")
    return evaluate_tokens(args.model, args.method, args.data, args.mask_token, steps=args.steps,
                           params=_params(args.param), seed=args.seed, progress=sys.stderr.isatty(),
                           patterns=args.patterns, position=args.position, batch_size=args.batch_size)


def _bench(args):
    import json

    from .bench import bench, load_twin, onnx2torch_twin, table
    from .runtime import write_atomic
    twin = None
    try:
        import captum  # noqa: F401
        twin = load_twin(args.torch, args.model) if args.torch else onnx2torch_twin(args.model)
    except ImportError:
        if args.torch:
            raise NnxplainError("--torch needs torch and captum installed") from None
    result = bench(args.model, args.method or ["gradient", "integrated_gradients"], batch=args.batch,
                   repeats=args.repeats, params=_params(args.param), twin=twin, threads=args.threads,
                   memory=not args.no_memory, progress=sys.stderr.isatty())
    print(table(result))
    if twin is None:
        print("(no Captum comparison: give --torch MODULE:FUNCTION, or install torch, captum and onnx2torch)")
    if args.json:
        write_atomic(args.json, json.dumps(result, indent=1).encode())


def _prototype(args):
    import io

    from . import visualize as vis
    from .prototype import prototypes
    from .runtime import write_files
    if not args.out.endswith(".png"):
        raise NnxplainError(f"-o {args.out}: the prototype is written as a .png (and .npy beside it)")
    neurons = parse_selection(args.neuron, None, option="--neuron")
    found = prototypes(args.model, neurons, steps=args.steps, lr=args.lr, l2=args.l2, low=args.low, high=args.high,
                       seed=args.seed, progress=sys.stderr.isatty(), data=args.data, prior=args.prior,
                       blur=args.blur, jitter=args.jitter)
    x, histories = found.x, found.histories
    labels = [f"class {k}: {float(row[k]):.3g}" + ("" if int(np.argmax(row)) == k else f" (top {int(np.argmax(row))})")
              for k, row in zip(neurons, found.scores)]
    how = "with the data's density prior" if args.data else "plain (no --data)"
    png = vis.prototypes_png(x, labels, found.low, found.high,
                             title=f"prototypes by activation maximization, {how}: class and score")
    buffer = io.BytesIO()
    np.save(buffer, x)
    npy = args.out[:-4] + ".npy"
    write_files({npy: buffer.getvalue(), args.out: png})  # both or neither
    changes = ", ".join(f"{k}: {h[0]:.3g} -> {h[-1]:.3g}" for k, h in zip(neurons, histories))
    print(f"wrote {args.out} and {npy} (objective per neuron {changes}; {len(histories[0]) - 1} steps)")


def _methods(args):
    from .methods import available, load_method
    width = max(len(n) for n in available())
    for name in available():
        method = load_method(name)
        params = ", ".join([f"{k}={v}" for k, v in method.params.items()] + [f"{k} (required)" for k in method.required]
                           + [f"{k} (optional)" for k in method.optional])
        aka = f" (also: {', '.join(method.aliases)})" if method.aliases else ""
        print(f"{name:<{width}}  {method.description}{aka}" + (f" [{params}]" if params else ""))


def _support(args):
    import onnx_graphsurgeon as gs

    from .backward import depends_on
    from .canonicalize import canonicalize
    from .compiler import explained_inputs, explained_output
    from .load import load
    from .methods import available, load_method, positions
    from .ops import VJP
    from .support import INTERNAL, each_method_support

    skipped = []  # the rewrites that did not apply, and why (a BatchNormalization left unfolded, ...)
    model = canonicalize(load(args.model), skipped=skipped)
    graph = gs.import_onnx(model)
    methods = [load_method(m) for m in (args.method or available())]  # required parameters: reported below
    live = depends_on(graph, explained_inputs(graph))
    where = positions(graph, explained_inputs(graph), explained_output(graph, None))
    on_path = [any(t.name in live for t in node.inputs) for node in graph.nodes]  # between the input and the output
    rows = [[node.name or "(unnamed)", node.op, ("yes" if node.op in VJP else "NO") if used else "-"]
            for node, used in zip(graph.nodes, on_path)]
    head = ["node", "op", "adapter"]
    backward = [m for m in methods if m.kind == "backward"] if args.method else []
    if backward:  # the rule each chosen method applies at each node
        head += [m.name for m in backward]
        for row, node in zip(rows, graph.nodes):
            row += [_support_cell(m, node, live, where) for m in backward]
    missing = sorted({node.op for node, used in zip(graph.nodes, on_path) if used and node.op not in VJP})
    print(f"nodes after canonicalization: {len(rows)}; "
          + (f"ops without a gradient adapter: {', '.join(missing)}" if missing else "every op has a gradient adapter"))
    if not backward:
        print("(the rule each method applies at each node: add --method NAME for a column per method)")
    widths = [max(len(str(c)) for c in column) for column in zip(head, *rows)]
    for row in [head] + rows:
        print("  " + "  ".join(f"{c:<{w}}" for c, w in zip(row, widths)).rstrip())
    if skipped:
        print("rewrites not applied:")
        for reason in skipped:
            print(f"  {reason}")
    print("methods:")
    failures = 0
    width = max(len(m.name) for m in methods)
    answers = list(each_method_support(model, methods))
    for method, ok, note in answers:
        if ok:
            print(f"  {method.name:<{width}}  applicable" + (f" ({note})" if note else ""))
        else:
            failures += 1
            print(f"  {method.name:<{width}}  not applicable: {note}")
    if any(note.startswith(INTERNAL) for _, ok, note in answers):
        return 3  # listed every method; a bug at one of them still makes the command fail
    return 1 if failures == len(methods) else 0


def _support_cell(method, node, live, where=None) -> str:
    from .backward import reads
    from .ops import VJP
    if not any(t.name in live for t in reads(node)):  # reads: a subgraph's captures count
        return "-"  # not between the input and the output: no backward needed
    try:
        name, rule, _ = method.rule_for(node, where)
    except NnxplainError:
        return "NO (rule)"
    if name == "refuse":
        return "NO (refused)"
    return name if name != "gradient" or node.op in VJP else "NO ADAPTER"
