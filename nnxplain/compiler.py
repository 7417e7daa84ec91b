"""compile(): model -> canonical model -> forward graph + one backward pass per method -> ONNX model."""
from __future__ import annotations

import functools
import gc
import hashlib
import json
import os

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .backward import depends_on, propagate
from .canonicalize import canonical_graph, unfolded_batchnorms
from .emitter import FLOAT, Emitter
from .explained import explained_inputs, fed_input, hidden_axes
from . import noise, portable
from ._version import __version__
from .errors import InternalError, NnxplainError, UnsupportedError
from .load import IR_VERSION, LIGHT_BYTES, first_line, infer_shapes, without_initializers
from .lrp import zero_where_zero
from .methods import Method, load_method, positions
from .params import own_key, scoped
from .patterns import BoundPatterns
from .sampling import copy_forward, explain_sampled, forward_nodes

SELECTION_MODES = ("max_activation", "index", "all")
NEURON_INPUT = "neuron"
POSITION_KEY = "nnxplain.position"  # metadata: the explained position of a sequence output


def without_gc(fn):
    """Run fn with Python's cyclic garbage collector paused. A compile builds a graph of mutually
    referring nodes and tensors; every full collection during the build scans all of them, which
    made compile time grow quadratically with the graph (1024 sampling blocks: 7.6 s CPU with the
    collector, 5.5 s without). The collector runs again as soon as fn returns."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not gc.isenabled():
            return fn(*args, **kwargs)
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            gc.enable()
    return wrapper


@without_gc
def compile(model: str | os.PathLike | onnx.ModelProto, methods, neuron_selection: str = "max_activation",
            params: dict | None = None, output: str | None = None, keep_softmax: bool = False,
            patterns=None, wrt: str | None = None, per_dimension: bool = False,
            position: str | int | None = None) -> onnx.ModelProto:
    """Compile an explainer: the model's own outputs plus one output per method, named as the method.

    methods: names of built-in methods, paths of method files, or Method objects.
    params: {"key": value} for every method that has the parameter, or {"method.key": value} for one.
    neuron_selection: "max_activation" (each sample's largest output), "index" (adds an int64 input
    `neuron` of shape [batch]) or "all" (the sum of all outputs).
    output: which model output to explain (default: the first).
    patterns: for pattern.net / pattern.attribution, the fitted patterns (a Patterns object or the
    path of a patterns file from `nnxplain fit`).
    wrt: what to explain (default: the float inputs, or a token model's word embeddings; see
    nnxplain.explained): a float input, an int input read by an embedding lookup, or a lookup's
    table or output, by name. For a lookup the output `<method>` is the relevance per token (summed
    over the hidden dimension); per_dimension adds `<method>/per_dimension`, not summed.
    position: for an output [batch, positions, scores] (a language model's logits, token
    classification), the position whose scores the neuron is selected from: "last", or an index
    (negative counts from the end); see explained_position for the default.
    """
    try:
        return _compile(model, methods, neuron_selection, params, output, keep_softmax, patterns, wrt, per_dimension,
                        position)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        # onnx's own errors from wherever they arise: the Python API raises NnxplainError only
        raise NnxplainError(f"onnx rejects the model: {first_line(exc)}") from None


def _compile(model, methods, neuron_selection, params, output, keep_softmax, patterns, wrt=None,
             per_dimension=False, position=None) -> onnx.ModelProto:
    if neuron_selection not in SELECTION_MODES:
        raise NnxplainError(f"neuron selection '{neuron_selection}' is unknown (choose from {', '.join(SELECTION_MODES)})")
    resolved = resolve_methods(methods, params or {})
    for method in resolved:
        if method.kind == "perturbation":
            raise NnxplainError(f"method '{method.name}' runs the model on perturbed copies and has no compiled graph: "
                                f"use it with `nnxplain analyze` or `nnxplain evaluate` (Python: "
                                f"nnxplain.perturbation.run('{method.name}', model, x))")
    source = source_of(model)  # first, while no copy of the weights is alive
    skipped = []  # rewrites that did not apply: their reasons explain errors about what they left
    graph = canonical_graph(model, keep_softmax, skipped)
    explained = [fed_input(t) for t in explained_inputs(graph, wrt)]
    position = explained_position(graph, explained_output(graph, output), position, neuron_selection)
    graph = build(graph, resolved, neuron_selection, output, patterns, skipped, wrt, per_dimension, position)
    model = export(graph)
    describe(model, source, resolved, neuron_selection, explained_output(graph, output).name, keep_softmax, explained)
    if position is not None:  # which position of a sequence output is explained (-1: the last)
        model.metadata_props.add(key=POSITION_KEY, value=str(position))
    return model


def build(graph: gs.Graph, resolved: list[Method], neuron_selection: str, output: str | None,
          patterns=None, skipped: list = (), wrt: str | None = None, per_dimension: bool = False,
          position: str | int | None = None) -> gs.Graph:
    """Add the explanation of each method to the canonical graph (in place; returned): the neuron
    selection, each method's backward pass or sampled passes, and one output per method. `skipped`:
    canonicalize's reasons, for errors at what an unfolded rewrite left. wrt, per_dimension: as compile's."""
    inputs = explained_inputs(graph, wrt)
    if per_dimension and not any(hidden_axes(x) for x in inputs):
        raise NnxplainError(f"per_dimension is for embeddings (token models); input '{inputs[0].name}' is explained "
                            f"itself, one value per element already")
    y = explained_output(graph, output)
    check_float_path(graph, inputs, y)
    model_inputs = list(graph.inputs)
    # what rules and methods may need besides their parameters: "model_nodes", the model's own nodes
    # (not the backward passes emitted for earlier methods); "forward", the explained tensor and the
    # nodes that depend on it or on a model input (a sampled copy of the forward pass copies those
    # that read the explained tensor or an input it repeats); "model_inputs", the model's inputs
    context = {"patterns": bind_patterns(resolved, patterns, graph), "model_nodes": list(graph.nodes),
               "forward": (inputs[0], forward_nodes(graph, [inputs[0]] + model_inputs)), "model_inputs": model_inputs}
    e = Emitter(graph)
    mask, valid = selection_mask(e, y, neuron_selection, explained_position(graph, y, position, neuron_selection))
    explainable = explainable_samples(e, inputs, valid)
    seed_value = e.Mul(mask, y)
    seeds = {"one": mask, "value": seed_value, "positive_value": e.Relu(seed_value)}  # unused ones are cleaned up
    for method in resolved:
        with e.scope(method.name):  # every node the method emits is named <method>/...
            for x, relevance in explain_method(e, method, inputs, y, mask, seeds, context, skipped):
                name = method.name if len(inputs) == 1 else f"{method.name}/{x.name}"
                hidden = hidden_axes(x)
                if hidden and per_dimension:
                    add_output(e, name + "/per_dimension", relevance, x.shape, explainable)
                if hidden:  # an embedding: the relevance per token
                    relevance = e.ReduceSum(relevance, e.ints(hidden), keepdims=0)
                add_output(e, name, relevance, [d for i, d in enumerate(x.shape) if i not in hidden], explainable)
    return graph


def add_output(e: Emitter, name: str, relevance: gs.Tensor, shape: list, explainable: gs.Tensor):
    """A graph output `name` (or `name` + "_explanation" where the model has a tensor of that name):
    the relevance where the sample is explainable, NaN where not."""
    out = gs.Variable(e.claim(name, "_explanation"), dtype=FLOAT, shape=shape)
    ok = e.Reshape(explainable, e.ints([-1] + [1] * (len(shape) - 1)))
    nan = e.const(np.array(np.nan, FLOAT))
    e.graph.nodes.append(gs.Node("Where", e.fresh("output"), inputs=[ok, relevance, nan], outputs=[out]))
    e.graph.outputs.append(out)


def _stash_constants(graph: gs.Graph) -> dict:
    """{name: values} of the graph's large constants, whose values in the graph become placeholders
    (a TensorProto with their type and shape, no data): export_onnx then converts no weight."""
    moved = {}
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant) and not isinstance(tensor._values, gs.ir.tensor.LazyValues) \
                and tensor.values.nbytes > LIGHT_BYTES:
            values = tensor.values
            moved[tensor.name] = values
            placeholder = onnx.TensorProto(name=tensor.name, dims=values.shape,
                                           data_type=onnx.helper.np_dtype_to_tensor_dtype(values.dtype))
            tensor.values = gs.ir.tensor.LazyValues(placeholder)
    return moved


def explain_method(e, method, inputs, y, mask, seeds, context, skipped) -> list:
    """(input, explanation) for each input, by one method. An error at a node that an unfolded
    BatchNormalization became says why it was not folded (canonicalize's `skipped`)."""
    try:
        if method.kind == "sampling":
            return explain_sampled(e, method, method.base_method(), inputs, y, mask, explain, context)
        return explain(e, method, inputs, y, seeds[method.start], context)
    except NnxplainError as exc:
        message = unfolded_batchnorms(str(exc), skipped)
        if message == str(exc):
            raise
        raise type(exc)(message) from None


def source_of(model) -> tuple[str, str]:
    """(file name, sha256) of the model compiled: of the file's bytes, or of a ModelProto's serialization
    without its initializers followed by each initializer's (one serialization of the whole would fail
    above protobuf's 2 GiB, and would copy all the weights at once)."""
    if isinstance(model, onnx.ModelProto):
        digest = hashlib.sha256()
        digest.update(without_initializers(model).SerializeToString(deterministic=True))
        for tensor in model.graph.initializer:
            digest.update(tensor.SerializeToString(deterministic=True))
        return "", digest.hexdigest()
    name, digest = os.path.basename(os.fspath(model)), hashlib.sha256()
    if not os.path.isfile(os.fspath(model)):
        return name, ""  # not a model file (missing, a folder, a pipe): load() says so next
    try:
        with open(os.fspath(model), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return name, ""  # unreadable: load() says so next
    return name, digest.hexdigest()


def describe(model: onnx.ModelProto, source: tuple[str, str], methods: list[Method], neuron_selection: str,
             explained: str, keep_softmax: bool, explained_inputs: list[str] = ()):
    """What the explainer computes, in its metadata_props (README: the compiled graph)."""
    outputs = [o.name for o in model.graph.output]
    entries = []
    for method in methods:
        mine = [o for o in outputs if o == method.name or o.startswith(method.name + "/") or
                o == method.name + "_explanation"]
        entry = {"name": method.name, "kind": method.kind, "outputs": mine,
                 "params": {k: method.params[k] for k in sorted(method.params)}}
        if method.kind == "sampling":
            entry.update(base=os.path.basename(method.base).removesuffix(".toml"), sampling=dict(method.sampling))
        elif method.kind == "backward":
            entry.update(start=method.start, times_input=method.times_input)
        if method.source:
            entry["file"] = os.path.basename(method.source)
        entries.append(entry)
    props = {
        "nnxplain.version": __version__,
        "nnxplain.source": source[0],
        "nnxplain.source_sha256": source[1],
        "nnxplain.explained_output": explained,
        "nnxplain.neuron_selection": neuron_selection,
        "nnxplain.keep_softmax": json.dumps(bool(keep_softmax)),
        # the inputs explained; for an embedding the ids' input, whose lookup it is
        "nnxplain.explained_inputs": json.dumps(list(explained_inputs)),
        "nnxplain.methods": json.dumps(entries, sort_keys=True),
    }
    model.producer_name, model.producer_version = "nnxplain", __version__
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def resolve_methods(methods, params: dict) -> list[Method]:
    if isinstance(methods, (str, os.PathLike, Method)):
        methods = [methods]
    if not methods:
        raise NnxplainError("no method given")
    resolved = [m if isinstance(m, Method) else load_method(m) for m in methods]
    names = [m.name for m in resolved]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise NnxplainError(f"method '{duplicate}' is given twice")
    out = [method.with_params(scoped(params, method.name, method.settable())) for method in resolved]
    unused = [k for k in params if not any(own_key(k, m.name, m.settable()) for m in resolved)]
    if unused:
        raise NnxplainError(f"parameter '{unused[0]}' belongs to none of the methods "
                            f"({'; '.join(f'{m.name}: ' + (', '.join(sorted(m.params)) or 'none') for m in resolved)})")
    return out


def bind_patterns(methods: list[Method], patterns, graph: gs.Graph):
    """The patterns, checked against this model, if a method needs them."""
    wanting = [m.name for m in methods if "patterns" in m.needs]
    if not wanting:
        return None
    if patterns is None:
        raise NnxplainError(f"method '{wanting[0]}' needs fitted patterns: fit them with `nnxplain fit MODEL "
                            f"--data TRAIN.npy -o patterns.npz` and pass `--patterns patterns.npz`, or fit in "
                            f"one step with `--fit-data TRAIN.npy` (Python: analyzer.fit(X))")
    return BoundPatterns(patterns, graph)


def check_float_path(graph: gs.Graph, inputs: list[gs.Variable], y: gs.Tensor):
    """The explained output must reach the inputs through float tensors: a quantized (int8) or cast
    section in between would silently give zero explanations; so would an If / Loop / Scan whose
    subgraph reads the input (backward.check_subgraphs)."""
    from .backward import NOT_DIFFERENTIABLE, check_subgraphs, depends_on, dtype_name, reaches
    live = depends_on(graph, inputs)
    check_subgraphs(graph, live, y)
    if y.name in live:
        return
    for node in graph.nodes:
        if node.op not in NOT_DIFFERENTIABLE and any(t.name in live for t in node.inputs):
            broken = [t for t in node.outputs if t.name not in live and t.dtype is not None]
            if broken and reaches(graph, broken, y):
                raise UnsupportedError(
                    f"node '{node.name}' ({node.op}) turns the input into {dtype_name(broken[0].dtype)} on the "
                    f"way to output '{y.name}'; only float32 models are supported (no quantized or integer sections)")


def explained_output(graph: gs.Graph, name: str | None) -> gs.Variable:
    if name is None:
        return graph.outputs[0]
    for t in graph.outputs:
        if t.name == name:
            return t
    raise NnxplainError(f"the model has no output '{name}' (outputs: {', '.join(t.name for t in graph.outputs)})")


def sequence_output(graph: gs.Graph, y: gs.Tensor) -> bool:
    """Whether y is [batch, positions, scores]: rank 3, its dim 1 an input's dim 1 (the sequence):
    the same named dim (a dynamic 'sequence'), or, for an integer input [batch, seq] (token ids, an
    attention mask), the same size."""
    from .backward import FLOAT_TYPES, dtype_name
    if y.shape is None or len(y.shape) != 3:
        return False
    length = y.shape[1]
    for x in graph.inputs:
        if not x.shape or len(x.shape) < 2 or x.shape[1] is None:
            continue
        named = isinstance(length, str) and x.shape[1] == length
        tokens = len(x.shape) == 2 and x.dtype is not None and dtype_name(x.dtype) not in FLOAT_TYPES \
            and isinstance(length, int) and x.shape[1] == length
        if named or tokens:
            return True
    return False


def causal(graph: gs.Graph) -> bool:
    """Whether the graph builds a causal mask: a Trilu node, as both torch exporters write a causal
    language model's (GPT-2's) attention mask."""
    return any(node.op == "Trilu" for node in graph.nodes)


def explained_position(graph: gs.Graph, y: gs.Tensor, position: str | int | None,
                       neuron_selection: str = "max_activation") -> int | None:
    """The position of output y whose scores the neuron is selected from, as an index (-1: the last),
    or None for an output without positions (its scores are the whole output, flattened per sample).

    `position` ("last", an int, or its text) needs y of shape [batch, positions, scores]. Without one,
    a sequence output (sequence_output) of a causal model (causal) is explained at its last position,
    the next-token prediction of a language model; a sequence output of another model (token
    classification) has no natural position and is refused, naming the output and its shape. Other
    outputs are flattened per sample as ever, and so is a sequence output explained with neuron
    selection "all" and no position (the sum of every position's scores: nothing to choose). "last" is
    the last position of the tensor, as Hugging Face's pipelines take it: with right padding, give the
    last real token's index instead."""
    shape = "[" + ", ".join(str(d) for d in (y.shape or [])) + "]"
    if position is None:
        if neuron_selection == "all" or not sequence_output(graph, y):
            return None
        if causal(graph):
            return -1
        raise NnxplainError(f"output '{y.name}' has shape {shape}, scores per position: choose the position to "
                            f"explain with --position last|N (Python: position=...)")
    if isinstance(position, str):
        text = position.strip().lower()
        try:
            position = -1 if text == "last" else int(text)
        except ValueError:
            raise NnxplainError(f"position '{position}' is not 'last' or a whole number") from None
    elif isinstance(position, (bool, float)) or not isinstance(position, (int, np.integer)):
        raise NnxplainError(f"position must be 'last' or a whole number, got {position!r}"[:200])
    if y.shape is None or len(y.shape) != 3:
        raise NnxplainError(f"position {position}: output '{y.name}' has shape {shape}; a position is chosen in an "
                            f"output [batch, positions, scores]")
    length = y.shape[1]
    if isinstance(length, int) and not -length <= position < length:
        raise NnxplainError(f"position {position} is out of range: output '{y.name}' ({shape}) has {length} "
                            f"positions")
    return int(position)


def selection_mask(e: Emitter, y: gs.Tensor, mode: str, position: int | None = None
                   ) -> tuple[gs.Tensor, gs.Tensor | None]:
    """1 at the selected output neuron of each sample, 0 elsewhere, shaped like y; and whether each
    sample's selection is valid (bool, [batch] or a scalar; None: always): with mode "index", the
    `neuron` in range; with a position (explained_position), the position in range (a dynamic
    sequence may be shorter). With a position, the neuron is selected from that position's scores."""
    at, valid = None, None
    if position is not None:
        # the position as a [1, positions, 1] one-hot (OneHot counts a negative index from the end,
        # as Python does, and gives all zeros past either end)
        length = e.Gather(e.Shape(y), e.const(np.array(1, np.int64)), axis=0)
        hot = e.OneHot(e.ints([position]), length, e.const(np.array([0, 1], FLOAT)), axis=-1)  # [1, positions]
        at = e.Reshape(hot, e.ints([1, -1, 1]))
        valid = e.Greater(e.ReduceSum(hot, e.ints([0, 1]), keepdims=0), e.const(np.array(0.5, FLOAT)))
        # the position's scores, [batch, scores]; Where, not a product, keeps other positions' values out
        zero = e.const(np.array(0.0, FLOAT))
        scores = e.ReduceSum(e.Where(e.Cast(at, to=onnx.TensorProto.BOOL), y, zero), e.ints([1]), keepdims=0)
    if mode == "all":
        # 1 everywhere, shaped like y as shape inference sees it (a ConstantOfShape of Shape(y) would
        # leave the whole backward pass's shapes unknown to ONNX Runtime: see Emitter.reshape_like)
        one = e.const(np.array(1.0, FLOAT))
        ones = e.Where(e.IsNaN(y), one, one)
        return (ones if at is None else e.Mul(ones, at)), valid
    if at is None:
        scores = e.Flatten(y, axis=1)
    # the depth is read from the run-time shape (inference can disagree with the engine, e.g. on a
    # ceil_mode pool), as a 0-D scalar (see portable.py)
    depth = e.Gather(e.Shape(scores), e.const(np.array(1, np.int64)), axis=0)
    if mode == "max_activation":
        index = e.ArgMax(scores, axis=1, keepdims=0)
    else:
        if NEURON_INPUT in e._taken:
            raise NnxplainError(f"the model has a tensor named '{NEURON_INPUT}', the name of the input that "
                                f"neuron selection 'index' adds; rename it in the model")
        e._taken.add(NEURON_INPUT)
        neuron = gs.Variable(NEURON_INPUT, dtype=np.int64, shape=[(y.shape or ["batch"])[0]])
        e.graph.inputs.append(neuron)
        index = neuron
        # OneHot would count a negative index from the end and give all zeros past the end
        in_range = e.And(e.GreaterOrEqual(neuron, e.ints([0])), e.Less(neuron, depth))
        valid = in_range if valid is None else e.And(in_range, valid)
    onehot = e.OneHot(index, depth, e.const(np.array([0, 1], FLOAT)), axis=-1)
    if at is None and y.shape is not None and len(y.shape) == 2:
        return onehot, valid  # already y's shape, and one ONNX Runtime's inference can follow (reshape_like)
    if at is None:  # to the run-time shape: inference can be wrong about y's static dims (a ceil_mode pool)
        return e.reshape_like(onehot, y), valid
    return e.Mul(e.Unsqueeze(onehot, e.ints([1])), at), valid


def output_size(session, name: str, position: int | None = None) -> int | None:
    """The number of neurons per sample of output `name` of a session (None where it is dynamic); of
    one position of a sequence output where a position is explained."""
    meta = next(o for o in session.get_outputs() if o.name == name)
    dims = meta.shape[1:] if position is None else meta.shape[2:]
    return int(np.prod(dims)) if all(isinstance(d, int) for d in dims) else None


def position_of(model: onnx.ModelProto) -> int | None:
    """The explained position of a compiled explainer's sequence output (-1: the last), or None."""
    value = next((p.value for p in model.metadata_props if p.key == POSITION_KEY), None)
    return None if value is None else int(value)


def neuron_feed(neurons, batch: int, size: int | None) -> np.ndarray:
    """The `neuron` input (int64 [batch]) for the given index or indices, each checked to be an output
    neuron (0 .. size - 1): the compiled graph would answer NaN for the samples whose index is not."""
    try:
        array = np.asarray(neurons)
        if array.dtype.kind not in "iu" and not (array.dtype.kind == "f" and np.all(np.mod(array, 1) == 0)):
            raise TypeError
        values = [int(v) for v in np.ravel(array)]
    except (TypeError, ValueError, OverflowError):
        raise NnxplainError(f"neuron selection must be whole numbers, got {neurons!r}"[:200]) from None
    if array.ndim > 1 or len(values) not in (1, batch):
        raise NnxplainError(f"give one neuron index, or one per sample ({batch}); got {len(values)}")
    for v in values:
        if v < 0 or (size is not None and v >= size) or v >= 2 ** 63:
            limit = f"has neurons 0..{size - 1}" if size is not None else "is indexed from 0 (int64)"
            raise NnxplainError(f"neuron {v} is out of range: the explained output {limit}")
    return np.array(values * (batch if len(values) == 1 else 1), np.int64)


def explainable_samples(e: Emitter, inputs: list[gs.Tensor], valid: gs.Tensor | None) -> gs.Tensor:
    """bool [batch]: the samples whose explanations mean something: every input finite (a NaN or an
    infinity anywhere in a sample makes x * 0 NaN there) and, with neuron selection "index", the
    neuron in range. The others get NaN explanations, which a caller can detect, not zeros."""
    ok = valid
    for x in inputs:
        nan_where_not_finite = e.Mul(x, 0.0)
        rank = len(x.shape)
        per_sample = e.ReduceSum(nan_where_not_finite, e.ints(list(range(1, rank))), keepdims=0) if rank > 1 \
            else nan_where_not_finite
        finite = e.Not(e.IsNaN(per_sample))
        ok = finite if ok is None else e.And(ok, finite)
    return ok


def explain(e: Emitter, method: Method, inputs: list[gs.Tensor], y: gs.Tensor, seed: gs.Tensor,
            context: dict | None = None, nodes: list | None = None) -> list:
    """(input, the method's explanation tensor for it) for each input. `nodes`: the forward pass that
    computes y from the inputs (default: the model's own nodes)."""
    if method.kind == "input":
        return [(x, e.Identity(x)) for x in inputs]
    if method.kind == "random":  # the portable generator (noise.py): the same numbers on every engine
        out = []
        for x in inputs:
            dims = x.shape[1:]
            if not all(isinstance(d, (int, np.integer)) for d in dims):  # known at run time only
                dims = e.Slice(e.Shape(x), e.ints([1]), e.ints([len(x.shape)]))
            unit = noise.emit(e, int(method.params.get("seed", 0)), 1, dims)
            out.append((x, e.Expand(e.Mul(unit, float(method.params.get("stddev", 1.0))), e.shape_of(x))))
        return out

    where = positions(e.graph, inputs, y)
    method.check_patterns(e.graph, where)
    model_nodes = (context or {}).get("model_nodes") or list(e.graph.nodes)
    names: dict[int, str] = {}

    def rule_name(node):
        if id(node) not in names:
            names[id(node)] = method.rule_for(node, where)[0]
        return names[id(node)]
    # what the LRP rules may assume about the relevance arriving at each tensor (see lrp.zero_where_zero)
    walked = model_nodes if nodes is None else nodes
    context = {**(context or {}), "zero_where_zero": zero_where_zero(e.graph, rule_name, model_nodes),
               "live": depends_on(e.graph, inputs, walked)}  # the tensors that depend on the explained input

    def rule_for(node):
        name, rule, rule_params = method.rule_for(node, where)
        needs = {need: context[need] for need in rule.needs}  # what the rule needs besides parameters
        return name, lambda e_, node_, *dys: rule.call(e_, node_, dys, rule_params, needs)

    references = {}
    if "reference" in method.needs:  # DeepLIFT: the forward pass of the reference input, beside x's
        references = reference_forward(e, method, inputs, context)
        context = {**context, "reference": references}
    relevance = propagate(e, {y.name: seed}, inputs, rule_for, walked)
    out = []
    for x in inputs:
        r = relevance[x.name]
        r = e.zeros_like(x) if r is None else r
        if method.times_input and x.name in references:
            r = e.Mul(r, e.Sub(x, references[x.name]))  # multipliers times (x - reference)
        elif method.times_input:
            r = e.Mul(r, x)
        post = method.params.get("postprocess", "none")
        if post == "abs":
            r = e.Abs(r)
        elif post == "square":
            r = e.Mul(r, r)
        out.append((x, r))
    return out


def reference_forward(e: Emitter, method: Method, inputs: list, context: dict) -> dict:
    """The forward pass on the reference input (every element `reference_inputs`), shaped like the
    explained input: {tensor name in the explained pass: the same tensor in the reference pass}.
    Inside a sampling method's block, the model's other inputs are read as the block repeats them
    (context["repeated"])."""
    if len(inputs) != 1:
        raise NnxplainError(f"method '{method.name}' explains models with one float input")
    x = inputs[0]
    original, nodes = context["forward"]
    value = e.const(np.array(float(method.params.get("reference_inputs", 0.0)), FLOAT))
    ref = e.Expand(value, e.shape_of(x))
    ref.dtype, ref.shape = x.dtype, x.shape
    batch = None if x is original else (original.shape or [None])[0]
    symbol = (x.shape or [None])[0]  # the reference pass has the explained pass's batch
    mapping, copies = copy_forward(e, nodes, {original.name: ref, **context.get("repeated", {})}, batch, "reference",
                                   symbol)
    references = {x.name: ref, **_by_position(e, nodes, original, x, mapping)}
    for node in copies:
        node.name = f"{method.name}/reference/forward/{node.name.strip('/')}"
    return references


def _by_position(e, nodes, original, x, mapping):
    """Reference tensors keyed by the names of the explained pass's tensors (the original forward's,
    or those of its copy that reads x)."""
    if x is original:
        return {name: t for name, t in mapping.items() if name != original.name}
    out, current = {}, {original.name: x}
    consumers = {}
    for node in e.graph.nodes:
        for t in node.inputs:
            consumers.setdefault(t.name, []).append(node)
    for node in nodes:  # walk the original and find, for each node, the copy reading the mapped inputs
        ins = [current.get(t.name) for t in node.inputs if isinstance(t, gs.Variable) and t.name in current]
        if not ins:
            continue
        copy = next(c for c in consumers.get(ins[0].name, []) if c.op == node.op and c.name == node.name)
        for t, c in zip(node.outputs, copy.outputs):
            current[t.name] = c
            out[c.name] = mapping[t.name]
    return out


def prune(graph: gs.Graph) -> gs.Graph:
    """Keep only the nodes that the graph's outputs depend on (in their order); the graph inputs stay.

    graphsurgeon's cleanup() does the same but disconnects every dropped node from its inputs, a
    list.remove (with a deep Node.__eq__) per consumer: quadratic when many dropped nodes read one
    tensor, as the seeds that a method does not use and the blocks of a sampling method do. The
    dropped nodes here stay referenced only by their input tensors' consumer lists, which nothing
    after this reads."""
    producer = {id(t): node for node in graph.nodes for t in node.outputs}
    used, stack = set(), [producer[id(t)] for t in graph.outputs if id(t) in producer]
    while stack:
        node = stack.pop()
        if id(node) in used:
            continue
        used.add(id(node))
        stack.extend(producer[id(t)] for t in node.inputs if id(t) in producer)
    graph.nodes = [node for node in graph.nodes if id(node) in used]
    return graph


def export(graph: gs.Graph) -> onnx.ModelProto:
    """The ONNX model of `graph`, in the portable normal form and checked. The graph's large
    constants are moved into the model, not copied (their values are gone from the graph after)."""
    opset = graph.opset
    prune(graph).toposort()
    moved = _stash_constants(graph)
    model = gs.export_onnx(graph)
    for tensor in model.graph.initializer:  # one weight at a time: no second copy of all of them
        if tensor.name in moved:
            tensor.CopyFrom(onnx.numpy_helper.from_array(moved.pop(tensor.name), tensor.name))
    model.ir_version = IR_VERSION
    del model.opset_import[:]
    model.opset_import.append(onnx.helper.make_opsetid("", opset))
    portable.normalize(model)
    try:
        model = infer_shapes(model, full_check=True)
    except Exception as exc:  # a bug of ours, not the user's: say so plainly
        raise InternalError(f"the emitted graph does not check: {first_line(exc)}") from exc
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in model.graph.value_info
             if v.type.tensor_type.HasField("shape")}
    del model.graph.value_info[:]  # the normal form stores no intermediate shapes (see portable.py)
    portable.output_symbols(model.graph)  # inference may name an output's dims anew (unk__N)
    portable.check(model, ranks)
    return model
