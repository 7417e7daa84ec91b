"""Sampling methods: one graph that explains many perturbed copies of the input at once.

A sampling method (`kind = "sampling"` in its method file) names a `base` method and a `[sampling]`
table: how the copies are made (`inputs = "noise"`: x + noise_scale * noise, or `inputs = "path"`:
points on the straight line from a reference to x, placed by the `riemann` parameter) and how their explanations reduce to one
(`reduce = "mean"`, `"variance"`, or `"mean_times_delta"`: the mean times (x - reference), which
makes integrated gradients). The compiler folds the samples into the batch dimension
(S copies of a batch of B become one batch of S*B, sample-major), copies the forward part of the
graph for that big batch, runs the base method's backward pass over it once, and reduces back to B.
`chunk` (samples per block, 0: all at once) splits the samples into several such blocks in the same
graph, each block reading its shape from the previous block's result so that ONNX Runtime runs
them one after the other and frees each block's intermediates before the next: memory is bounded
by one block.

Noise (`inputs = "noise"`) is generated inside the graph from the method's `seed` by default
(`noise = "graph"`): a counter-based generator of plain float32 arithmetic (nnxplain/noise.py, where
its exact definition is), so every ONNX engine computes the same explanation from the explainer file
alone. With `noise = "input"` the graph takes an input `<method>/noise` (float32, shape
[augment_by_n, batch, *input dims]) of standard normal noise instead; `noise(shape, seed)` draws it
(the same generator, the same values for every sample of the batch), and the Analyzer and the CLI
feed it with the method's `seed`.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .emitter import FLOAT, Emitter
from .explained import table_of
from . import noise as portable_noise
from .errors import NnxplainError

INPUTS = {"noise", "path"}
REDUCE = {"mean", "variance", "mean_times_delta"}
NOISE_SUFFIX = "/noise"
RIEMANN = ("right", "left", "middle", "trapezoid")  # a path method's `riemann` parameter (default: right)


def path_points(method) -> tuple[np.ndarray, np.ndarray | None]:
    """The path coefficients alpha_k (points reference + alpha_k (x - reference)) of a path method
    with `steps` points, and their weights (None: all 1/steps), by its `riemann` parameter:
    right: k/steps, k = 1..steps (Captum's riemann_right); left: k/steps, k = 0..steps-1
    (iNNvestigate: the reference in, x out); middle: (k + 1/2)/steps; trapezoid: k/(steps-1),
    k = 0..steps-1, the end points weighted 1/2, weights summing to 1 (Captum's riemann_trapezoid
    takes the same points with weights 1/steps, 1/(2 steps) at the ends: (steps - 1)/steps of this)."""
    steps, rule = sample_count(method), method.params.get("riemann", "right")
    if rule not in RIEMANN:
        raise NnxplainError(f"method '{method.name}': riemann must be one of {', '.join(RIEMANN)}, got '{rule}'")
    k = np.arange(steps, dtype=np.float64)
    if rule == "trapezoid":
        if steps < 2:
            raise NnxplainError(f"method '{method.name}': riemann = trapezoid needs steps >= 2, got {steps}")
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return k / (steps - 1), weights
    return {"right": (k + 1) / steps, "left": k / steps, "middle": (k + 0.5) / steps}[rule], None


NOISE_SOURCES = ("graph", "input")


def noise(shape, seed: int) -> np.ndarray:
    """Standard normal noise for a `<method>/noise` input, shape [samples, batch, *dims]: the in-graph
    generator's values (nnxplain.noise), the same for every sample of the batch."""
    samples, batch, *dims = (int(d) for d in shape)
    unit = portable_noise.standard_normal(seed, samples, dims)[:, None]
    return np.ascontiguousarray(np.broadcast_to(unit, (samples, batch, *dims)))


def noise_feeds(session, x: np.ndarray, seeds: dict[str, int] | None = None) -> dict:
    """Noise for every `<method>/noise` input of a compiled explainer, for the batch x (seed: the
    method's, from `seeds` by method name, else 0). x is the explained input; for an embedding, the
    ids: the noise's shape continues with a table row's dims, static in the noise input's shape."""
    feeds = {}
    for meta in session.get_inputs():
        if meta.name.endswith(NOISE_SUFFIX):
            method = meta.name[:-len(NOISE_SUFFIX)]
            samples, row = meta.shape[0], tuple(meta.shape[1 + np.ndim(x):])
            feeds[meta.name] = noise((samples,) + tuple(np.shape(x)) + row, (seeds or {}).get(method, 0))
    return feeds


def sample_count(method) -> int:
    """The samples per input (checked in range by nnxplain.params)."""
    return int(method.params["augment_by_n" if method.sampling["inputs"] == "noise" else "steps"])


def explain_sampled(e: Emitter, method, base, inputs: list, y: gs.Tensor, mask: gs.Tensor, explain, context) -> list:
    """(input, explanation) for a sampling method whose base method is `base` (a resolved Method): of
    the first explained tensor; the model's other inputs (int ids, masks, other float inputs) are
    held fixed, repeated for every sample. context["forward"]: the explained tensor and the forward
    nodes that depend on it or on a model input (compiler.build), taken before anything was emitted."""
    x = inputs[0]
    rank = len(x.shape)
    dims = list(x.shape[1:])  # ints, or names of dims known at run time only
    batch = (x.shape or [None])[0]
    if not isinstance(batch, str) and batch is not None:
        raise NnxplainError(f"method '{method.name}': input '{x.name}' has a fixed batch size {batch}; sampling "
                            f"methods fold the samples into the batch and need a dynamic one")
    static = all(isinstance(d, (int, np.integer)) for d in dims)
    sample_dims = e.ints(dims) if static else e.Slice(e.Shape(x), e.ints([1]), e.ints([rank]))  # x's dims 1..

    def shape(lead: list) -> gs.Tensor:
        """lead followed by x's dims 1..: a constant where those are static."""
        return e.ints(lead + dims) if static else e.Concat(e.ints(lead), sample_dims, axis=0)
    total = sample_count(method)
    chunk = int(method.params.get("chunk", 0)) or total
    kind, reduce = method.sampling["inputs"], method.sampling["reduce"]
    reference = path_reference(e, method, x) if kind == "path" else None
    held = held_inputs(context["model_inputs"], x, batch)

    alphas, weights = path_points(method) if kind == "path" else (None, None)
    if kind == "noise" and method.params.get("noise", "graph") == "graph":
        with e.scope("noise"):
            # from the run-time dims even where they are static: with constant inputs the generator
            # is folded by ONNX Runtime when it loads the file, which took 40 s for 50 samples at
            # 3x224x224 (computing it in each run takes 0.7 s of a 2.4 s run at batch 2)
            runtime_dims = e.Slice(e.Shape(x), e.ints([1]), e.ints([rank])) if static else sample_dims
            unit = portable_noise.emit(e, int(method.params.get("seed", 0)), total, runtime_dims)
        unit = e.Unsqueeze(unit, e.ints([1]))                                       # [S, 1, ...]: every sample alike
        scaled = e.Mul(unit, float(method.params.get("noise_scale", 1.0)))
    elif kind == "noise":
        name = e.claim(method.name + NOISE_SUFFIX, "_input")
        noise_in = gs.Variable(name, dtype=FLOAT, shape=[total, batch or "batch"] + dims)
        e.graph.inputs.append(noise_in)
        scaled = e.Mul(noise_in, float(method.params.get("noise_scale", 1.0)))
    else:
        delta = e.Sub(x, reference)

    original, forward = context["forward"]
    total_sum, total_sq = None, None
    for block, start in enumerate(range(0, total, chunk)):
        n = min(chunk, total - start)
        if kind == "noise":
            part = scaled if n == total else e.Slice(scaled, e.ints([start]), e.ints([start + n]), e.ints([0]))
            samples = e.Add(e.Unsqueeze(x, e.ints([0])), part)                      # [n, B, ...]
        else:
            block_alphas = alphas[start:start + n].astype(FLOAT).reshape([n] + [1] * rank)
            samples = e.Add(e.Mul(e.Unsqueeze(delta, e.ints([0])), e.const(block_alphas)), reference)
        if total_sum is None:
            x_big = e.Reshape(samples, shape([-1]))                                # [n*B, ...]
        else:
            # The block's shape is read from the previous block's sum: a real dependency, so ONNX
            # Runtime finishes a block (and frees its intermediates) before it starts the next one;
            # independent blocks would be interleaved level by level and all be alive at once.
            previous_batch = e.Slice(e.Shape(total_sum), e.ints([0]), e.ints([1]))
            x_big = e.Reshape(samples, e.Concat(e.Mul(previous_batch, e.ints([n])), sample_dims, axis=0))
        # each block its own batch symbol: blocks of different sizes must not look alike to ONNX Runtime
        symbol = f"{method.name}_samples_{block}"
        x_big.dtype, x_big.shape = x.dtype, [symbol] + dims
        repeated = {t.name: e.Tile(t, e.ints([n] + [1] * (len(t.shape) - 1))) for t in held}  # sample-major, as x_big
        mapping, copies = copy_forward(e, forward, {original.name: x_big, **repeated}, batch, f"s{block}", symbol)
        if y.name not in mapping:
            raise NnxplainError(f"output '{y.name}' does not depend on input '{x.name}'")
        y_big = mapping[y.name]
        mask_big = e.Tile(mask, e.ints([n] + [1] * (len(y.shape) - 1)))
        value = e.Mul(mask_big, y_big)
        seed = {"one": mask_big, "value": value, "positive_value": e.Relu(value)}[base.start]
        with e.scope(f"s{block}"):  # the block's backward pass: <method>/s<k>/<model node>/<rule>/...
            [(_, r_big)] = explain(e, base, [x_big], y_big, seed, {**context, "repeated": repeated}, nodes=copies)
        for node in copies:  # rules have matched the original names; now make them unique
            node.name = f"{method.name}/s{block}/forward/{node.name.strip('/')}"
        r = e.Reshape(r_big, shape([n, -1]))                                       # [n, B, ...]
        if weights is not None:  # a weighted sum (trapezoid): weights times steps, so the mean below is it
            r = e.Mul(r, e.const((weights[start:start + n] * total).astype(FLOAT).reshape([n] + [1] * rank)))
        part_sum = e.ReduceSum(r, e.ints([0]), keepdims=0)
        total_sum = part_sum if total_sum is None else e.Add(total_sum, part_sum)
        if reduce == "variance":
            part_sq = e.ReduceSum(e.Mul(r, r), e.ints([0]), keepdims=0)
            total_sq = part_sq if total_sq is None else e.Add(total_sq, part_sq)
    mean = e.Div(total_sum, float(total))
    if reduce == "mean":
        out = mean
    elif reduce == "variance":  # E[r^2] - E[r]^2, as Captum's NoiseTunnel computes VarGrad
        out = e.Sub(e.Div(total_sq, float(total)), e.Mul(mean, mean))
    else:
        out = e.Mul(mean, e.Sub(x, reference))
    return [(x, out)]


def path_reference(e: Emitter, method, x: gs.Tensor) -> gs.Tensor:
    """The start of a path method's path: the embedding of token `reference_token` at every position
    (x an embedding lookup's output; Captum's LayerIntegratedGradients with that token as the
    baseline), else the constant `reference_inputs` everywhere."""
    token = int(method.params.get("reference_token", -1))
    if token < 0:
        return e.const(np.array(float(method.params.get("reference_inputs", 0.0)), FLOAT))
    table = table_of(x)
    if table is None:
        raise NnxplainError(f"method '{method.name}': reference_token is for embeddings (token models); "
                            f"'{x.name}' is a float input: give reference_inputs")
    if token >= len(table):
        raise NnxplainError(f"method '{method.name}': reference_token {token} is out of range: the embedding table "
                            f"has {len(table)} rows (tokens 0..{len(table) - 1})")
    return e.const(np.ascontiguousarray(table[token], FLOAT))


def held_inputs(model_inputs: list, x: gs.Tensor, batch) -> list:
    """The model's inputs that a sampled copy of the forward pass repeats along the folded batch:
    every input but x whose first dim is x's batch dim (by name); the others are shared as they are."""
    return [t for t in model_inputs if t is not x and t.shape and t.shape[0] == batch]


def forward_nodes(graph: gs.Graph, sources: list) -> list:
    """The nodes of the (topologically sorted) forward graph that depend on any of `sources`."""
    reached, nodes = {t.name for t in sources}, []
    for node in graph.nodes:
        if any(isinstance(t, gs.Variable) and t.name in reached for t in node.inputs):
            nodes.append(node)
            reached.update(t.name for t in node.outputs)
    return nodes


def copy_forward(e: Emitter, nodes: list, replaced: dict, batch, tag: str, symbol: str | None = None):
    """Append a copy of those forward nodes that read (directly or through earlier copies) a tensor of
    `replaced` ({name: its replacement}); return {original tensor name: its copy} and the copied nodes.
    A node that computes a replaced tensor is not copied (the replacement stands for it). Dims named
    `batch` become `symbol` in the copy. Node names stay until the caller renames them (rule entries
    match names); constants (weights) and what reads no replaced tensor are shared with the original."""
    mapping, copies = dict(replaced), []
    for node in nodes:
        if not any(isinstance(t, gs.Variable) and t.name in mapping for t in node.inputs) \
                or any(t.name in replaced for t in node.outputs):
            continue
        ins = [mapping.get(t.name, t) if isinstance(t, gs.Variable) and t.name else t for t in node.inputs]
        outs = []
        for t in node.outputs:
            shape = None if t.shape is None else [symbol if d == batch and batch is not None else d
                                                  for d in t.shape]
            copy = gs.Variable(e.fresh(f"{tag}/{t.name.strip('/')}"), dtype=t.dtype, shape=shape)
            mapping[t.name] = copy
            outs.append(copy)
        copies.append(gs.Node(node.op, node.name, dict(node.attrs), ins, outs, domain=node.domain))
        e.graph.nodes.append(copies[-1])
    return mapping, copies
