"""Patterns for PatternNet and PatternAttribution (Kindermans et al. 2018): fit, store, look up.

A pattern is, per output neuron k of a linear layer (Conv, Gemm, MatMul with a constant weight),
the direction a_k in which the layer's input carries the signal that neuron detects. With y = w^T x
the layer's output *without* its bias, over all samples (and, for a Conv, all receptive fields):

    linear  (S_a, Eq. 3):  a = cov[x, y] / (w^T cov[x, y])            (= cov[x, y] / var[y])
    relu    (S_a+-, Eq. 7, positive regime):
                           a+ = (E+[xy] - E+[x] E[y]) / (w^T (E+[xy] - E+[x] E[y]))
    relu.negative:         a- the same over the negative regime (used by signal_quality)

E+ is the mean over the samples where the neuron is in its positive regime, E the mean over all of
them (as in the paper's Eq. 7; iNNvestigate 1.x used the regime mean E+[y] instead). The regime is
decided by the layer's output *with* its bias, y + b > 0: exactly where the ReLU that follows the
layer lets the signal through (iNNvestigate does the same). Neurons never in the regime, or whose
denominator is 0, get the pattern 0.

The statistics come from an ONNX graph derived from the model (`statistics_model`): the forward
pass plus, per layer, the sums below, so fitting runs on the explainer's execution provider. For a
Conv the per-neuron sums over all receptive fields, sum_p d[n, k, p] * patch(x)[n, :, p], are the
Conv's weight gradient for the output gradient d, itself written as a Conv. Batches are summed in
float64 on the host, so any batching gives the same patterns.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .canonicalize import canonical_graph
from .emitter import FLOAT, Emitter, shape, static_dims
from .errors import NnxplainError, NnxplainWarning
from .load import IR_VERSION
from .layer import NO_ROWS, LinearLayer
from .ops import LINEAR

PATTERN_TYPES = ("linear", "relu", "relu.negative")
FORMAT = "nnxplain-patterns-1"


# ------------------------------------------------------------------------------------- layers


@dataclass
class Layer:
    """One linear layer of the canonical graph, seen as K neurons with weight rows w_k of length D."""
    key: str                # the node's name (its first output's name if it has none)
    node: gs.Node
    weight: np.ndarray      # the ONNX weight, as stored in the model
    rows: np.ndarray        # [K, D]: w_k, what multiplies an input patch (Gemm's alpha included)
    groups: int = 1         # Conv groups: rows of group G see the G-th slice of the input channels

    @property
    def neurons(self) -> int:
        return self.rows.shape[0]

    def to_weight_layout(self, rows: np.ndarray) -> np.ndarray:
        """[K, D] pattern rows -> the ONNX weight's layout, so the op's transpose can take them."""
        return LinearLayer(self.node).from_rows(rows)


def layer_key(node: gs.Node) -> str:
    return node.name or node.outputs[0].name


def linear_layers(graph: gs.Graph) -> list[Layer]:
    """The layers that get patterns: every node with a linear adapter and a constant weight."""
    views = [LinearLayer.of(node) for node in graph.nodes if node.op not in NO_ROWS]
    return [Layer(layer_key(v.node), v.node, v.weight, v.rows(), v.groups) for v in views if v is not None]


def fingerprint(layers: list[Layer]) -> str:
    """Identifies the model the patterns belong to: its linear layers' names, ops and weights."""
    h = hashlib.sha256()
    for layer in layers:
        h.update(f"{layer.key}|{layer.node.op}|{layer.weight.shape}|".encode())
        h.update(np.ascontiguousarray(layer.weight, np.float32).tobytes())
    return h.hexdigest()[:20]


# ------------------------------------------------------------------------------------- patterns


@dataclass
class Patterns:
    """Fitted patterns per layer key, in [K, D] row layout, and the model they belong to."""
    pattern_type: str
    fingerprint: str
    rows: dict[str, np.ndarray]
    samples: int = 0                       # input samples the statistics were taken over
    counts: dict[str, np.ndarray] = field(default_factory=dict)  # per neuron: samples in its regime
    skipped: int = 0                       # samples left out of fitting: they held NaN or inf

    def check(self, layers: list[Layer]):
        """Fail clearly if these patterns were not fitted on the model `layers` come from, or hold
        non-finite entries."""
        _check_model(self.fingerprint, self.rows, layers)
        self.check_finite("patterns")

    def weight_for(self, layer: Layer, mode: str) -> np.ndarray:
        """The weight that replaces the layer's own in the backward pass, in the ONNX weight layout:
        the patterns ("net": PatternNet) or the weights times the patterns ("attribution")."""
        if layer.key not in self.rows:
            raise NnxplainError(f"no pattern for layer '{layer.key}' ({layer.node.op})")
        rows = self.rows[layer.key]
        if mode == "attribution":
            rows = rows * layer.rows
        return layer.to_weight_layout(rows).astype(FLOAT)

    def save(self, path: str | os.PathLike):
        """An npz with one array per layer, named by the layer's node: its patterns [K, D] (float32;
        a Conv's D in the weight's (channel, kernel) order); `<node>|count` the samples each neuron
        had in its regime; `__meta__` (JSON) the estimator, sample count and model fingerprint."""
        from .runtime import write_atomic
        meta = {"format": FORMAT, "pattern_type": self.pattern_type, "fingerprint": self.fingerprint,
                "samples": self.samples, "skipped": self.skipped, "layers": list(self.rows)}
        arrays = {key: np.asarray(a, FLOAT) for key, a in self.rows.items()}
        arrays.update({f"{key}|count": self.counts[key] for key in self.rows if key in self.counts})
        buffer = io.BytesIO()
        np.savez(buffer, __meta__=np.array(json.dumps(meta)), **arrays)
        write_atomic(path, buffer.getvalue())

    def check_finite(self, where: str):
        """Patterns with a NaN or an infinity would turn every explanation into NaN: refuse them."""
        for key, rows in self.rows.items():
            if not np.isfinite(rows).all():
                raise NnxplainError(f"{where}: the pattern of layer '{key}' has non-finite entries (NaN or inf); "
                                    f"fit the patterns again on finite data")

    @classmethod
    def load(cls, path: str | os.PathLike, layers: list[Layer] | None = None) -> "Patterns":
        """Read a patterns file. Each array's header is checked before its data is read: against the
        shapes of `layers` (the model's linear layers) where given, else against a size cap, so a
        small file cannot make nnxplain allocate more than the model's own layers need."""
        from .runtime import load_arrays
        what = "a patterns file written by `nnxplain fit`"
        shapes = None if layers is None else {layer.key: layer.rows.shape for layer in layers}

        def check(name, shape, dtype):
            if name is None:
                raise NnxplainError(f"{path}: not {what} (a single array; patterns files are the .npz that "
                                    f"`nnxplain fit` writes)")
            key, count = (name[:-len("|count")], True) if name.endswith("|count") else (name, False)
            if shapes is not None and key in shapes:
                want = shapes[key][:1] if count else shapes[key]
                if want != shape:
                    raise NnxplainError(f"{path}: these patterns were fitted on another model (array '{name}' has "
                                        f"shape {list(shape)}, the model's layer {list(want)}); {REFIT}")
                return
            size = int(np.prod(shape, dtype=object)) * dtype.itemsize
            limit = META_BYTES if name == "__meta__" else MAX_LAYER_BYTES
            if size > limit:
                raise NnxplainError(f"{path}: not {what} (array '{name}' claims {size} bytes, more than {limit})")

        arrays = load_arrays(path, what, check)
        try:
            if "__meta__" not in arrays:
                raise ValueError("no __meta__ entry")
            meta = json.loads(str(arrays["__meta__"]()))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format') if isinstance(meta, dict) else None!r}, "
                                 f"expected {FORMAT!r}")
            keys = meta["layers"]
            if layers is not None:  # before reading anything: a file for another model stops here
                _check_model(str(meta["fingerprint"]), keys, layers, f"{os.fspath(path)}: ")
            missing = [key for key in keys if key not in arrays]
            if missing:
                raise KeyError(missing[0])
            rows = {key: arrays[key]().astype(np.float64) for key in keys}
            counts = {key: arrays[f"{key}|count"]() for key in keys if f"{key}|count" in arrays}
            patterns = cls(str(meta["pattern_type"]), str(meta["fingerprint"]), rows, int(meta.get("samples", 0)),
                           counts, int(meta.get("skipped", 0)))
        except (ValueError, KeyError, TypeError) as exc:
            raise NnxplainError(f"{path}: not {what} ({type(exc).__name__}: {exc})") from None
        patterns.check_finite(os.fspath(path))
        return patterns


REFIT = "fit them on this one with `nnxplain fit MODEL --data X.npy -o patterns.npz`"


def _check_model(fitted_on: str, keys, layers: list[Layer], where: str = ""):
    """Patterns (their model's fingerprint and layer keys) must belong to the model of `layers`."""
    if fitted_on == fingerprint(layers):
        return
    missing = [layer.key for layer in layers if layer.key not in keys]
    detail = f"it has no pattern for layer '{missing[0]}'" if missing else "the layers' weights or shapes differ"
    raise NnxplainError(f"{where}these patterns were fitted on another model ({detail}); {REFIT}")


# A patterns file's metadata is a short JSON text; without the model's layer shapes to compare with,
# no layer's patterns may claim more than this (a VGG-16's largest layer takes about 400 MB).
META_BYTES = 1 << 20
MAX_LAYER_BYTES = 1 << 30


def as_patterns(patterns, layers: list[Layer] | None = None) -> Patterns | None:
    """A Patterns object, or one read from a patterns file (checked against `layers` where given)."""
    if patterns is None or isinstance(patterns, Patterns):
        return patterns
    return Patterns.load(patterns, layers)


# ------------------------------------------------------------------------------------- statistics


def statistics_model(graph: gs.Graph, layers: list[Layer], pattern_type: str) -> onnx.ModelProto:
    """The model's forward pass with, per layer, outputs `<layer key>|<stat>` that sum one batch
    (`batch_sums` turns them into per-neuron float64 sums):

    size: elements of y (samples = size / K); sum_y [K]: y over all samples; count [K]: samples in
    the regime (relu types); sum_x: x over the regime per neuron (linear: over all samples, one row
    per group); sum_xy: x * (y - batch mean of y) over the regime per neuron. A Conv with a relu
    type has both x-sums in one output, sum_x_xy [group, D, (x, xy), K / group].
    """
    if pattern_type not in PATTERN_TYPES:
        raise NnxplainError(f"pattern type '{pattern_type}' is unknown (choose from {', '.join(PATTERN_TYPES)})")
    e = Emitter(graph, prefix="fit")
    outputs = []
    for layer in layers:
        node = layer.node
        lin = LINEAR[node.op](node)
        x, out = node.inputs[lin.x], node.outputs[0]
        y = _split_bias(e, layer, lin)
        mask = None
        if pattern_type != "linear":
            compare = e.Greater if pattern_type == "relu" else e.LessOrEqual
            mask = e.Cast(compare(out, e.const(np.zeros((), FLOAT))), to=onnx.TensorProto.FLOAT)
        try:
            stats = (_conv_stats if node.op == "Conv" else _dense_stats)(e, layer, x, y, mask)
        except ValueError as exc:  # shapes the statistics need are unknown
            raise NnxplainError(f"layer '{layer.key}' ({node.op}): {exc}") from None
        for stat, tensor in stats.items():
            tensor.name = f"{layer.key}|{stat}"
            tensor.dtype = np.int64 if stat == "size" else FLOAT if node.op == "Conv" else np.float64
            tensor.shape = None
            outputs.append(tensor)
    graph.outputs = outputs
    graph.cleanup().toposort()
    model = gs.export_onnx(graph)
    model.ir_version = IR_VERSION
    return model


def _split_bias(e, layer, lin):
    """y = w^T x, exactly: the layer computes y without its bias, and an Add gives the network its
    output y + b as before. (Subtracting b from the output instead would cost y its digits
    wherever |b| >> |y|.)"""
    node = layer.node
    if lin.bias is None or len(node.inputs) <= lin.bias or not node.inputs[lin.bias].name:
        return node.outputs[0]
    bias = node.inputs[lin.bias]
    if not isinstance(bias, gs.Constant):
        raise NnxplainError(f"layer '{layer.key}' ({node.op}): its bias is not a constant")
    b = np.asarray(bias.values, FLOAT)
    if node.op == "Gemm":
        b = b * np.float32(node.attrs.get("beta", 1.0))
    else:  # Conv: one bias per output channel
        b = b.reshape(-1, *[1] * (len(shape(node.outputs[0])) - 2))
    out = node.outputs[0]
    y = gs.Variable(e.fresh("without_bias"), dtype=out.dtype, shape=out.shape)
    inputs = [t for i, t in enumerate(node.inputs) if i != lin.bias]
    node.inputs.clear()
    node.inputs.extend(inputs)
    node.outputs.clear()
    node.outputs.append(y)
    e.graph.nodes.append(gs.Node("Add", e.fresh("bias"), inputs=[y, e.const(b)], outputs=[out]))
    return y


def _centered(e, y, axes):
    """y minus its batch mean per neuron. The x*y sums are taken of centered y (and corrected on
    the host in float64), because E[xy] - E[x] E[y] cancels most digits when the means are large."""
    if e.graph.opset >= 18:  # ReduceMean's axes became an input in opset 18
        return e.Sub(y, e.ReduceMean(y, e.ints(axes), keepdims=1))
    return e.Sub(y, e.ReduceMean(y, axes=axes, keepdims=1))


def _dense_stats(e, layer, x, y, mask):
    node = layer.node
    if node.op == "Gemm" and node.attrs.get("transA", 0):
        x = e.Transpose(x, perm=[1, 0])
    # in float64: sums of products lose digits to cancellation in E[xy] - E[x] E[y], and dense
    # layers are cheap (ONNX Runtime's CPU Conv has no float64 kernel, so Conv sums stay float32)
    double = onnx.TensorProto.DOUBLE
    x2 = e.Cast(e.Reshape(x, e.ints([-1, layer.rows.shape[1]])), to=double)  # samples x D
    y2 = e.Cast(e.Reshape(y, e.ints([-1, layer.neurons])), to=double)        # samples x K
    stats = {"size": e.Size(y2), "sum_y": e.ReduceSum(y2, e.ints([0]), keepdims=0)}
    if mask is None:
        stats["sum_x"] = e.ReduceSum(x2, e.ints([0]), keepdims=0)
        stats["sum_xy"] = e.Gemm(_centered(e, y2, [0]), x2, transA=1)
    else:
        m2 = e.Cast(e.Reshape(mask, e.ints([-1, layer.neurons])), to=double)
        stats["count"] = e.ReduceSum(m2, e.ints([0]), keepdims=0)
        stats["sum_x"] = e.Gemm(m2, x2, transA=1)
        stats["sum_xy"] = e.Gemm(e.Mul(m2, _centered(e, y2, [0])), x2, transA=1)
    return stats


def _conv_stats(e, layer, x, y, mask):
    """Per-neuron sums over every receptive field: the patches of x (im2col) times the per-neuron
    factors, one batched MatMul over samples and groups, then summed over the samples."""
    node = layer.node
    n = len(static_dims(x, "fit", 2))
    axes = e.ints([0, *range(2, 2 + n)])
    stats = {"size": e.Size(y), "sum_y": e.ReduceSum(y, axes, keepdims=0)}
    g, k, d = layer.groups, layer.neurons, layer.rows.shape[1]
    if mask is None:  # the x-sum is the same for every neuron: the patches of the batch-summed input
        summed = _patches(e, layer, e.ReduceSum(x, e.ints([0]), keepdims=1))
        stats["sum_x"] = e.ReduceSum(e.Reshape(summed, e.ints([g, d, -1])), e.ints([2]), keepdims=0)  # [g, D]
        factors = [_centered(e, y, [0, *range(2, 2 + n)])]
    else:
        stats["count"] = e.ReduceSum(mask, axes, keepdims=0)
        factors = [mask, e.Mul(mask, _centered(e, y, [0, *range(2, 2 + n)]))]
    cols = e.Reshape(_patches(e, layer, x), e.ints([0, g, d, -1]))             # [N, g, D, P]
    parts = [e.Reshape(f, e.ints([0, g, k // g, -1])) for f in factors]       # [N, g, K/g, P]
    f = parts[0] if len(parts) == 1 else e.Concat(*parts, axis=2)
    sums = e.ReduceSum(e.MatMul(cols, e.Transpose(f, perm=[0, 1, 3, 2])), e.ints([0]), keepdims=0)
    stats["sum_xy" if mask is None else "sum_x_xy"] = sums                     # [g, D, (factors, K/g)]
    return stats


def _patches(e, layer, x):
    """im2col: [N, C, *S] -> [N, C * taps, *out], channel c's kernel taps in the weight's order, as
    a depthwise Conv with one-hot kernels and the layer's strides, pads and dilations (measured
    faster in ONNX Runtime than one strided Slice per tap, joined or not)."""
    node = layer.node
    kernel = list(layer.weight.shape[2:])
    n = len(kernel)
    channels = static_dims(node.inputs[0], "fit", 1)[0]
    taps = int(np.prod(kernel))
    one_hot = np.tile(np.eye(taps, dtype=FLOAT).reshape(taps, 1, *kernel), (channels, 1, *[1] * n))
    return e.Conv(x, e.const(one_hot), group=channels, strides=node.attrs.get("strides", [1] * n),
                  pads=node.attrs.get("pads", [0] * 2 * n), dilations=node.attrs.get("dilations", [1] * n))


# ------------------------------------------------------------------------------------- fitting


def fit(model, data, pattern_type: str = "relu", batch_size: int = 256, progress: bool = True) -> Patterns:
    """Fit the patterns of every linear layer of `model` (path or ModelProto) on `data`: a numpy
    array (batch first), a .npy / .npz path, or an iterable of batches. Memory does not grow with
    the data: each batch's sums are added, in float64, to running totals."""
    statistics = Statistics(model, pattern_type)
    fixed = statistics.fixed_batch
    if fixed is not None and isinstance(data, (np.ndarray, str, os.PathLike)):
        batch_size = fixed  # a model exported with a fixed batch size takes batches of exactly that
    totals = None
    for batch in _progress(batches(data, batch_size), progress, "fitting patterns"):
        totals = Statistics.add(totals, statistics.sums(batch))
    return statistics.patterns(totals, warn_stacklevel=3)


class Statistics:
    """The statistics graph of a model in an ONNX Runtime session: `sums(batch)` gives one batch's
    float64 sums, `add` adds two such sums (in any grouping: the engines add them per worker, then
    on the driver), `patterns(totals)` solves for the patterns once. `graph_bytes`: the statistics
    graph already built (by `statistics_model`), so that workers need not build it again."""

    def __init__(self, model, pattern_type: str = "relu", graph_bytes: bytes | None = None, threads: int = 0):
        from .runtime import session
        graph = canonical_graph(model)
        self.layers = linear_layers(graph)
        if not self.layers:
            raise NnxplainError("the model has no linear layer (Conv, Gemm, MatMul with a constant weight) to fit")
        self.pattern_type, self.threads = pattern_type, threads
        self.fingerprint = fingerprint(self.layers)
        self.graph_bytes = graph_bytes or statistics_model(graph, self.layers, pattern_type).SerializeToString()
        self.session = session(self.graph_bytes, threads=threads)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise NnxplainError(f"fitting needs a model with one input; this one has {len(inputs)}")
        self.input = inputs[0]
        self.fixed_batch = inputs[0].shape[0] if isinstance(inputs[0].shape[0], int) else None
        self.names = [o.name for o in self.session.get_outputs()]
        self.where = [name.rpartition("|")[::2] for name in self.names]  # (layer key, stat) of each output

    def sums(self, batch) -> dict:
        """{"samples": n, "skipped": k, layer key: {stat: float64 sum}} of one batch; samples that hold
        NaN or inf are skipped (one would make every pattern NaN) and counted."""
        from .runtime import check_feed, nonfinite_samples, run
        if self.fixed_batch is not None and len(batch) != self.fixed_batch:
            raise NnxplainError(f"data: the model's batch size is fixed at {self.fixed_batch}, so the number of "
                                f"samples must be a multiple of it (a batch of {len(batch)} is left)")
        batch = check_feed(self.input, batch, "data")
        finite = ~nonfinite_samples(batch)
        skipped = int((~finite).sum())
        if skipped and self.fixed_batch is not None:
            raise NnxplainError(f"data: {skipped} samples hold NaN or inf, and the model's batch size is fixed at "
                                f"{self.fixed_batch}: remove them from the data")
        batch = batch[finite] if skipped else batch
        sums = {"samples": len(batch), "skipped": skipped}
        if not len(batch):
            sums.update({layer.key: {} for layer in self.layers})
            return sums
        outputs = run(self.session, self.names, {self.input.name: batch})
        raw = {layer.key: {} for layer in self.layers}
        for (key, stat), value in zip(self.where, outputs):
            raw[key][stat] = value
        sums.update({layer.key: batch_sums(layer, raw[layer.key]) for layer in self.layers})
        return sums

    @staticmethod
    def add(totals: dict | None, sums: dict | None) -> dict | None:
        if totals is None or sums is None:
            return sums if totals is None else totals
        out = {}
        for key, value in totals.items():
            if key in ("samples", "skipped"):
                out[key] = value + sums[key]
            else:  # a batch with no finite sample has no sums
                out[key] = {stat: value.get(stat, 0) + sums[key].get(stat, 0) for stat in {*value, *sums[key]}}
        return out

    def patterns(self, totals: dict | None, warn_stacklevel: int = 2) -> Patterns:
        samples, skipped = (totals["samples"], totals["skipped"]) if totals else (0, 0)
        if samples == 0:
            raise NnxplainError("the data holds no samples to fit the patterns on" +
                                (f" (all {skipped} hold NaN or inf)" if skipped else ""))
        if skipped:
            warnings.warn(f"data: {skipped} of {samples + skipped} samples hold NaN or inf; the patterns are fitted on "
                          f"the other {samples}", NnxplainWarning, stacklevel=warn_stacklevel)
        rows, counts = {}, {}
        for layer in self.layers:
            rows[layer.key], counts[layer.key] = pattern_rows(layer, totals[layer.key])
        patterns = Patterns(self.pattern_type, self.fingerprint, rows, samples, counts, skipped)
        patterns.check_finite("fitting")
        return patterns


def batch_sums(layer: Layer, raw: dict) -> dict[str, np.ndarray]:
    """One batch's statistics graph outputs -> float64 sums per neuron: n (samples), count [K],
    sum_y [K], sum_x [K, D] and sum_xy [K, D] (over the regime), with the centering undone."""
    k, d = layer.rows.shape
    g = layer.groups
    raw = {stat: np.asarray(value, np.float64) for stat, value in raw.items()}
    n = float(raw["size"]) / k
    if layer.node.op == "Conv":                        # [g, D, (factors, K/g)] -> [K, D] per factor
        sums = raw.get("sum_x_xy", raw.get("sum_xy"))
        factors = np.moveaxis(sums.reshape(g, d, -1, k // g), 1, -1)     # [g, factors, K/g, D]
        sum_xy = factors[:, -1].reshape(k, d)
        sum_x = factors[:, 0].reshape(k, d) if "sum_x_xy" in raw else np.repeat(raw["sum_x"].reshape(g, d),
                                                                                k // g, axis=0)
    else:
        sum_x = raw["sum_x"] if raw["sum_x"].ndim == 2 else np.broadcast_to(raw["sum_x"], (k, d))
        sum_xy = raw["sum_xy"]
    count = raw["count"] if "count" in raw else np.full(k, n)
    batch_mean_y = raw["sum_y"] / n
    return {"n": np.float64(n), "count": count, "sum_y": raw["sum_y"], "sum_x": sum_x,
            "sum_xy": sum_xy + batch_mean_y[:, None] * sum_x}   # undo the centering, in float64


def pattern_rows(layer: Layer, sums: dict) -> tuple[np.ndarray, np.ndarray]:
    """The patterns [K, D] from one layer's summed statistics, and the regime count per neuron."""
    count = sums["count"]
    in_regime = np.maximum(count, 1.0)[:, None]
    mean_y = sums["sum_y"] / sums["n"]                 # E[y] over all samples (Eq. 7)
    cov = sums["sum_xy"] / in_regime - (sums["sum_x"] / in_regime) * mean_y[:, None]
    denom = np.einsum("kd,kd->k", layer.rows, cov)
    safe = np.where(denom == 0, 1.0, denom)
    return np.where(denom[:, None] == 0, 0.0, cov / safe[:, None]), count


def batches(data, batch_size: int) -> Iterable[np.ndarray]:
    """Batches of `data`: an array (or a .npy / .npz path) sliced into batch_size rows, or the
    items of an iterable of batches as they come."""
    if batch_size < 1:
        raise NnxplainError(f"batch_size must be at least 1, got {batch_size}")
    if isinstance(data, (str, os.PathLike)):
        from .runtime import load_array
        data = load_array(data)
    if isinstance(data, np.ndarray):
        if data.ndim == 0:
            raise NnxplainError("the data must be a batch (samples first), got a scalar")
        return _Sliced(data, batch_size)
    return (np.asarray(b) for b in data)


class _Sliced:
    def __init__(self, data, size):
        self.data, self.size = data, size

    def __len__(self):
        return -(-len(self.data) // self.size)

    def __iter__(self):
        return (self.data[i:i + self.size] for i in range(0, len(self.data), self.size))


def _progress(items, enabled: bool, what: str):
    if not enabled:
        return items
    from tqdm import tqdm
    return tqdm(items, desc=what, unit="batch", total=len(items) if hasattr(items, "__len__") else None)


class BoundPatterns:
    """Patterns checked against the canonical graph being compiled: what the pattern rules read."""

    def __init__(self, patterns, graph: gs.Graph):
        layers = linear_layers(graph)
        patterns = as_patterns(patterns, layers)
        patterns.check(layers)
        self.patterns = patterns
        self.layers = {layer.key: layer for layer in layers}

    def weight(self, node: gs.Node, mode: str) -> np.ndarray:
        layer = self.layers.get(layer_key(node))
        if layer is None:
            why = NO_ROWS.get(node.op, "its weight is not a constant")
            raise NnxplainError(f"node '{node.name}' ({node.op}) has no pattern: {why}")
        return self.patterns.weight_for(layer, mode)
