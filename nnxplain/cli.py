"""The command line: nnxplain compile | analyze | fit | evaluate | bench | prototype | methods | support."""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .compiler import NEURON_INPUT, SELECTION_MODES, compile, resolve_methods
from .errors import NnxplainError
from .patterns import PATTERN_TYPES


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
        p.add_argument("--batch-size", type=int, default=256, help="samples per run (default: 256)")
        datasets(p)

    p = sub.add_parser("compile", help="write an explainer ONNX model")
    common(p)
    p.add_argument("-o", "--out", required=True, help="the explainer .onnx to write")
    p.set_defaults(run=_compile)

    p = sub.add_parser("analyze", help="compile and run: explain the inputs (an array or a folder of images)")
    common(p, several=False)
    p.add_argument("--input", "-i", required=True,
                   help="the inputs: .npy, .npz with an array 'x', a folder of images or a glob")
    p.add_argument("--neuron", type=int, action="append",
                   help="output index to explain (with --neuron-selection index; without it, the data's labels)")
    p.add_argument("-o", "--out", help="where to write the explanations: a folder (shards, any number of inputs), "
                                       ".npy (one array) or .png (a picture)")
    p.add_argument("--float16", action="store_true", help="store the explanations in the folder as float16")
    p.add_argument("--pictures", action="store_true", help="also draw one PNG per input into the folder's pictures/")
    p.add_argument("--grid", metavar="GRID.png",
                   help="draw inputs times methods (several --method allowed), with predicted class and score")
    p.add_argument("--picture", choices=("heatmap", "graymap", "project", "overlay"),
                   help="how to draw (default: project for signal methods, heatmap otherwise)")
    p.add_argument("--reduce", choices=("sum", "norm"), default="sum", help="channel reduction (default: sum)")
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
                   help="images [N, C, H, W]: .npy, .npz with 'x', a folder of images or a glob")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default: 64)")
    datasets(p)
    p.add_argument("--region", type=int, help="region side in pixels (default: 9, at most a quarter of the image side)")
    p.add_argument("--steps", type=int, help="regions to perturb (default: all)")
    p.add_argument("--perturbation", choices=("mean", "zeros", "gaussian", "invert"), default="zeros",
                   help="how a region is perturbed (default: zeros)")
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
    p.add_argument("--neuron", type=int, required=True, help="the output neuron (class) to maximize")
    p.add_argument("--steps", type=int, default=200, help="gradient ascent steps (default: 200)")
    p.add_argument("--lr", type=float, default=0.05, help="step size as a fraction of the input range (default: 0.05)")
    p.add_argument("--l2", type=float, default=0.01, help="L2 penalty on the input (default: 0.01)")
    p.add_argument("--low", type=float, default=0.0, help="input range, lower end (default: 0)")
    p.add_argument("--high", type=float, default=1.0, help="input range, upper end (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting point's noise")
    p.add_argument("-o", "--out", required=True, metavar="PROTO.png",
                   help="the picture (.png); the array goes beside it as .npy")
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
    from .engine import fit
    patterns, skipped = fit(args.model, _dataset(args, data), pattern_type=pattern_type, batch_size=args.batch_size,
                            engine=_engine(args), progress=sys.stderr.isatty())
    _report_skipped(skipped)
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
    from .sampling import NOISE_SUFFIX
    methods = _methods_of(args)
    if len(methods) != 1 and not args.grid:
        raise NnxplainError("analyze takes exactly one method (several with --grid GRID.png)")
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
    from .perturbation import DEFAULTS as PERTURBATION_METHODS
    data = _dataset(args, args.input).read_all()
    x = data.x
    _report_skipped(data.skipped)
    if len(x) == 0:
        raise NnxplainError(f"{args.input}: no input to explain")
    compiled = [m for m in methods if m not in PERTURBATION_METHODS]
    sampled = [m for m in methods if m in PERTURBATION_METHODS]
    params = _params(args.param)
    neurons = None
    if args.neuron_selection == "index":
        if not args.neuron:
            raise NnxplainError("--neuron-selection index needs --neuron N")
        neurons = args.neuron if len(args.neuron) > 1 else args.neuron * len(x)
        if len(neurons) != len(x):
            raise NnxplainError(f"--neuron given {len(neurons)} times for a batch of {len(x)}")
    elif args.neuron:
        raise NnxplainError("--neuron needs --neuron-selection index")
    if sampled and args.neuron_selection == "all":
        raise NnxplainError(f"method '{sampled[0]}' explains one output per sample (max_activation or index)")
    perturbation_keys = {k for m in sampled for k in PERTURBATION_METHODS[m]}
    graph_keys = {k for m in compiled for k in load_method(m).settable()}
    unknown = [k for k in params if "." not in k and k not in perturbation_keys | graph_keys]
    if unknown:
        raise NnxplainError(f"parameter '{unknown[0]}' belongs to none of the methods")
    results, names, providers = {}, [], "CPUExecutionProvider"
    if compiled:
        args.method, args.rules = [m for m in args.method if m in compiled], [m for m in args.rules if m in compiled]
        graph_params = {k: v for k, v in params.items() if k.split(".")[0] not in PERTURBATION_METHODS
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
        if neurons is not None:
            feeds[NEURON_INPUT] = np.asarray(neurons, np.int64)
        names = [o.name for o in model.graph.output][-len(compiled):]
        explained = args.output_name or model.graph.output[0].name
        scores, results = _run_batched(sess, [explained] + names, feeds, inputs[0].name, args.batch_size, seeds)
        providers = ", ".join(sess.get_providers())
    if sampled:
        from .evaluate import Scorer
        from .perturbation import run
        scorer = Scorer(args.model)
        x = np.asarray(x, np.float32)
        scores = scorer(x)
        for name in sampled:
            own = {k: v for k, v in params.items() if "." not in k and k in PERTURBATION_METHODS[name]}
            own.update({k[len(name) + 1:]: v for k, v in params.items() if k.startswith(name + ".")})
            results[name] = run(name, args.model, x, own, neuron=neurons, progress=sys.stderr.isatty())
        names = [m if m in sampled else names[compiled.index(m)] for m in methods]
        results = {n: results[n] for n in names}
    from . import visualize as vis
    if args.out is not None:
        name, result = names[0], results[names[0]]
        if args.out.endswith(".npy"):
            import io
            buffer = io.BytesIO()
            np.save(buffer, result)
            data = buffer.getvalue()
        else:
            kind = args.picture or vis.default_kind(name)
            low, high = float(x.min()), float(x.max())
            pictures = [vis.picture(kind, r, xi, args.reduce, low, high) for r, xi in zip(result, x)]
            data = vis.image_png(pictures, scale=max(1, 128 // max(pictures[0].shape[:2])))
        write_atomic(args.out, data)
        print(f"wrote {args.out} ({name}, shape {list(result.shape)}, providers {providers})")
    if args.grid is not None:
        kinds = {n: args.picture for n in names} if args.picture else None
        write_atomic(args.grid, vis.grid_png(x, results, scores.reshape(len(x), -1), kinds,
                                             args.reduce))
        print(f"wrote {args.grid} ({len(x)} inputs x {len(names)} methods)")


def _run_batched(sess, outputs, feeds, name, batch_size, seeds):
    """The explainer run on `feeds` batch by batch (memory: one batch's intermediates), each batch's
    noise for input `name` from its seed (`data.batch_seed`): (scores, {output: explanation})."""
    from .data import batch_seed
    from .sampling import noise_feeds
    if batch_size < 1:
        raise NnxplainError(f"--batch-size must be at least 1, got {batch_size}")
    parts = []
    for index, start in enumerate(range(0, len(feeds[name]), batch_size)):
        part = {k: v[start:start + batch_size] for k, v in feeds.items()}
        part.update(noise_feeds(sess, part[name], {m: batch_seed(s, index) for m, s in seeds.items()}))
        parts.append(sess.run(outputs, part))
    outs = [np.concatenate(column) for column in zip(*parts)]
    return outs[0], dict(zip(outputs[1:], outs[1:]))


def _analyze_folder(args, methods):
    """analyze -o FOLDER: stream the dataset through the explainer on the engine, into shards."""
    from . import visualize as vis
    from .engine import analyze
    from .perturbation import DEFAULTS as PERTURBATION_METHODS
    if len(methods) != 1 or args.grid:
        raise NnxplainError("-o FOLDER writes one method's explanations; --grid draws from -o .npy/.png runs")
    if methods[0] in PERTURBATION_METHODS:
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
    from .evaluate import csv_bytes, plot_bytes, table
    from .runtime import write_atomic
    if not args.method:
        raise NnxplainError("give at least one --method to evaluate (the random baseline always runs)")
    base = args.out[:-4] if args.out.endswith((".png", ".csv")) else args.out
    result, skipped = evaluate(args.model, args.method, _dataset(args, args.data), batch_size=args.batch_size,
                               engine=_engine(args), progress=sys.stderr.isatty(), region=args.region,
                               steps=args.steps, perturbation=args.perturbation, params=_params(args.param),
                               seed=args.seed, patterns=args.patterns)
    _report_skipped(skipped)
    plot, csv = plot_bytes(result), csv_bytes(result)
    write_atomic(base + ".png", plot)
    write_atomic(base + ".csv", csv)
    print(f"perturbation analysis: {result['images']} images, {result['region']}x{result['region']} regions, "
          f"{result['steps']} steps, {result['perturbation']}")
    print(table(result))
    print(f"wrote {base}.png and {base}.csv")


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
    from .prototype import prototype
    from .runtime import write_atomic
    if not args.out.endswith(".png"):
        raise NnxplainError(f"-o {args.out}: the prototype is written as a .png (and .npy beside it)")
    x, history = prototype(args.model, args.neuron, steps=args.steps, lr=args.lr, l2=args.l2, low=args.low,
                           high=args.high, seed=args.seed, progress=sys.stderr.isatty())
    picture = vis.as_rgb(x, args.low, args.high)
    png = vis.image_png([picture], scale=max(1, 256 // max(picture.shape[:2])))
    buffer = io.BytesIO()
    np.save(buffer, x)
    npy = args.out[:-4] + ".npy"
    write_atomic(npy, buffer.getvalue())
    write_atomic(args.out, png)
    print(f"wrote {args.out} and {npy} (neuron {args.neuron}: objective {history[0]:.3f} -> {history[-1]:.3f} "
          f"in {len(history) - 1} steps)")


def _methods(args):
    from .methods import available, load_method
    for name in available():
        method = load_method(name)
        params = ", ".join([f"{k}={v}" for k, v in method.params.items()] + [f"{k} (required)" for k in method.required]
                           + [f"{k} (optional)" for k in method.optional])
        aka = f" (also: {', '.join(method.aliases)})" if method.aliases else ""
        print(f"{name:<24} {method.description}{aka}" + (f" [{params}]" if params else ""))
    from .perturbation import DEFAULTS
    notes = {"occlusion": "Occlusion: the score drop when a patch covers the pixel (batched forward runs, no graph).",
             "lime": "LIME: weighted ridge regression on random on/off grid segments (batched forward runs, no graph)."}
    for name, defaults in DEFAULTS.items():
        print(f"{name:<24} {notes[name]} [{', '.join(f'{k}={v}' for k, v in defaults.items())}]")


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
