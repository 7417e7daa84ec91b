"""The PatternNet paper's quality measure of a signal estimator (Kindermans et al. 2018, Eq. 1):

    rho(S) = 1 - max_v corr(w^T x, v^T (x - S(x)))

per neuron: how much of the neuron's output y = w^T x can still be read, linearly, from what the
estimator calls distractor, d = x - S(x). Higher is better; 1 means nothing is left. As in the
paper, v is the least-squares regression of y on d (with an intercept) on one data set, and the
correlation is measured on another. A layer's rho is the mean over its neurons (neurons whose
output does not vary are left out). Every estimator here has the form S(x) = a * y with w^T a = 1:

    "weights"   S_w: a = w / (w^T w)                     (what Deconvnet / Guided Backprop assume)
    "random"    a random direction scaled to w^T a = 1   (the paper's baseline)
    Patterns    S_a: a fitted pattern per neuron         (pattern_type "linear")
    (pos, neg)  S_a+-: a+ where the neuron is in its positive regime, a- elsewhere
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from numpy.lib.stride_tricks import sliding_window_view

from .emitter import FLOAT
from .errors import NnxplainError
from .load import IR_VERSION
from .patterns import Layer, Patterns, canonical_graph, linear_layers


def signal_quality(model, estimators: dict, regress_data: np.ndarray, test_data: np.ndarray,
                   max_samples: int = 200_000, seed: int = 0) -> dict[str, dict[str, float]]:
    """{estimator name: {layer key: rho}} for every linear layer of `model`."""
    graph = canonical_graph(model)
    layers = linear_layers(graph)
    for name, estimator in estimators.items():
        for patterns in (estimator if isinstance(estimator, tuple) else (estimator,)):
            if isinstance(patterns, Patterns):
                patterns.check(layers)
            elif patterns not in ("weights", "random"):
                raise NnxplainError(f"estimator '{name}': expected 'weights', 'random', Patterns or a "
                                    f"(positive, negative) pair of Patterns, got {patterns!r}")
    fit_io, test_io = (layer_io(graph, layers, data) for data in (regress_data, test_data))
    rng = np.random.default_rng(seed)
    out = {name: {} for name in estimators}
    for layer in layers:
        fit_set = layer_samples(layer, *fit_io[layer.key], max_samples, rng)
        test_set = layer_samples(layer, *test_io[layer.key], max_samples, rng)
        for name, estimator in estimators.items():
            out[name][layer.key] = _layer_rho(layer, estimator, fit_set, test_set, rng)
    return out


def _layer_rho(layer: Layer, estimator, fit_set, test_set, rng) -> float:
    w = layer.rows
    if isinstance(estimator, tuple):
        positive, negative = (p.rows[layer.key] for p in estimator)
    elif isinstance(estimator, Patterns):
        positive = negative = estimator.rows[layer.key]
    elif estimator == "weights":
        positive = negative = w / np.maximum((w * w).sum(1, keepdims=True), 1e-30)
    else:
        r = rng.normal(size=w.shape)
        scale = (w * r).sum(1, keepdims=True)
        positive = negative = r / np.where(scale == 0, 1.0, scale)
    rhos = []
    per_group = layer.neurons // layer.groups
    for k in range(layer.neurons):
        (xf, yf, pf), (xt, yt, pt) = ((x[:, k // per_group], y[:, k], pos[:, k]) for x, y, pos in (fit_set, test_set))
        if yf.std() == 0 or yt.std() == 0:
            continue

        def distractor(x, y, pos):
            a = np.where(pos[:, None], positive[k], negative[k])
            return np.concatenate([x - y[:, None] * a, np.ones((len(x), 1))], axis=1)

        v = np.linalg.lstsq(distractor(xf, yf, pf), yf, rcond=None)[0]
        guess = distractor(xt, yt, pt) @ v
        corr = 0.0 if guess.std() == 0 else np.corrcoef(yt, guess)[0, 1]
        rhos.append(1.0 - corr)
    return float(np.mean(rhos)) if rhos else float("nan")


def layer_io(graph: gs.Graph, layers: list[Layer], data) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each layer's input and output (with bias) on `data`, from one run of the model."""
    from .runtime import check_feed, run, session
    io_graph = graph.copy()
    tensors = io_graph.tensors()
    wanted = [(tensors[layer.node.inputs[0].name], tensors[layer.node.outputs[0].name]) for layer in layers]
    outputs = {t.name: t for pair in wanted for t in pair}
    for t in outputs.values():
        t.dtype = t.dtype or FLOAT
    io_graph.outputs = list(outputs.values())
    model = gs.export_onnx(io_graph.cleanup())
    model.ir_version = IR_VERSION
    sess = session(model)
    names = [o.name for o in sess.get_outputs()]
    feed = check_feed(sess.get_inputs()[0], data, "data")
    values = dict(zip(names, run(sess, names, {sess.get_inputs()[0].name: feed})))
    return {layer.key: (values[x.name], values[y.name]) for layer, (x, y) in zip(layers, wanted)}


def layer_samples(layer: Layer, x, out, max_samples: int, rng):
    """(X [S, groups, D], Y [S, K] without bias, positive regime [S, K]), at most max_samples rows."""
    node = layer.node
    if node.op == "Conv":
        X = patches(x, layer.weight.shape, node.attrs, layer.groups)
        yb = np.moveaxis(out, 1, -1).reshape(-1, layer.neurons)
    else:
        if node.op == "Gemm" and node.attrs.get("transA", 0):
            x = x.T
        X = x.reshape(-1, 1, layer.rows.shape[1])
        yb = out.reshape(-1, layer.neurons)
    X = X.astype(np.float64)
    if len(X) > max_samples:
        keep = rng.choice(len(X), max_samples, replace=False)
        X, yb = X[keep], yb[keep]
    per_group = layer.neurons // layer.groups
    w = layer.rows.reshape(layer.groups, per_group, -1)
    y = np.einsum("sgd,gkd->sgk", X, w).reshape(len(X), -1)
    return X, y, yb > 0


def patches(x: np.ndarray, weight_shape, attrs: dict, groups: int) -> np.ndarray:
    """im2col for a Conv of any rank: [N, C, *S] -> [N * positions, groups, C/groups * prod(kernel)],
    the rows in the order of the weight's [C/groups, *kernel] entries."""
    n_sp = x.ndim - 2
    kernel = list(weight_shape[2:])
    strides = attrs.get("strides", [1] * n_sp)
    dilations = attrs.get("dilations", [1] * n_sp)
    pads = attrs.get("pads", [0] * 2 * n_sp)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + n_sp]) for i in range(n_sp)])
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilations)]
    view = sliding_window_view(xp, span, axis=tuple(range(2, 2 + n_sp)))   # [N, C, *positions, *span]
    view = view[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)
                + tuple(slice(None, None, d) for d in dilations)]
    n, c = x.shape[:2]
    positions = view.shape[2:2 + n_sp]
    view = np.moveaxis(view, 1, 1 + n_sp)                                    # [N, *positions, C, *kernel]
    return view.reshape(n * int(np.prod(positions)), groups, -1)

