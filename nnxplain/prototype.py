"""Activation maximization (Simonyan et al. 2014; the LRP tutorial's "prototype"): the input that
maximizes one output neuron, found by gradient ascent with the compiled gradient graph.

    maximize  f_k(x) - l2 * ||x - m||^2 + prior * log p(x)   subject to  low <= x <= high

f_k is the neuron's score (pre-softmax, as every explainer explains it). Without data, m = 0 and
there is no density term: the plain prototype, which maximizes the score but need not look like any
input. With data (the tutorial's "AM-density", Nguyen et al. 2016), m is the data mean, p(x) a
Gaussian fitted to the data (mean, covariance shrunk 10% toward its mean variance; a diagonal
covariance above 4096 input values) and x starts at the data mean: the prototype is the most likely
input the model scores highly, which keeps it in the data's range and look.

Each step moves x by `lr` times the objective's gradient scaled to unit max-norm (a normalized
ascent, so the step size does not depend on the score's scale), then clips x to [low, high]
(projected gradient ascent). `jitter` shifts the input by up to that many pixels (a random roll)
while its gradient is taken, and `blur` smooths x with a Gaussian of that many pixels every 10
steps: both keep high-frequency patterns out of prototypes of large images.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from .errors import NnxplainError

FULL_COVARIANCE_MAX = 4096  # input values up to which the density prior has a full covariance
SHRINKAGE = 0.1
BLUR_EVERY = 10


class Prototypes(NamedTuple):
    x: np.ndarray                # [neurons, *input dims]
    histories: list[list[float]]  # per neuron, the objective after each step
    scores: np.ndarray           # [neurons, outputs]: the model's scores of the prototypes
    low: float                   # the input range they were kept in
    high: float


class DensityPrior:
    """A Gaussian N(mean, cov) of the data: its mean, and the gradient of its log density."""

    def __init__(self, data):
        from .runtime import load_array
        x = load_array(data) if isinstance(data, (str, bytes)) or hasattr(data, "__fspath__") else np.asarray(data)
        if x.ndim < 2 or len(x) < 2:
            raise NnxplainError(f"the density prior needs a batch of at least 2 inputs, got shape {list(x.shape)}")
        flat = x.reshape(len(x), -1).astype(np.float64)
        if not np.isfinite(flat).all():
            raise NnxplainError("the density prior's data holds NaN or infinite values")
        self.shape = x.shape[1:]
        self.low, self.high = float(flat.min()), float(flat.max())
        self.mean = flat.mean(0)
        centred = flat - self.mean
        if flat.shape[1] <= FULL_COVARIANCE_MAX:
            cov = centred.T @ centred / (len(flat) - 1)
            average = np.trace(cov) / len(cov)
            cov = (1 - SHRINKAGE) * cov + SHRINKAGE * max(average, 1e-12) * np.eye(len(cov))
            self.precision = np.linalg.inv(cov)
            self.diagonal = None
        else:
            var = centred.var(0)
            var = (1 - SHRINKAGE) * var + SHRINKAGE * max(var.mean(), 1e-12)
            self.precision, self.diagonal = None, 1.0 / var

    def log_density(self, x: np.ndarray) -> np.ndarray:
        """log p(x) up to a constant, per sample of x [N, ...]."""
        d = x.reshape(len(x), -1).astype(np.float64) - self.mean
        if self.diagonal is not None:
            return -0.5 * (d * d * self.diagonal).sum(1)
        return -0.5 * np.einsum("ni,ij,nj->n", d, self.precision, d)

    def gradient(self, x: np.ndarray) -> np.ndarray:
        """d log p(x) / dx, shaped like x [N, ...]."""
        d = x.reshape(len(x), -1).astype(np.float64) - self.mean
        g = -(d * self.diagonal) if self.diagonal is not None else -(d @ self.precision)
        return g.reshape(x.shape)


def prototype(model, neuron: int, steps: int = 200, lr: float = 0.05, l2: float = 0.01, low: float | None = None,
              high: float | None = None, seed: int = 0, progress: bool = False, data=None, prior: float = 0.5,
              blur: float = 0.0, jitter: int = 0) -> tuple[np.ndarray, list[float]]:
    """(the prototype, shaped like one input without the batch dimension; the objective after each step)."""
    found = prototypes(model, [neuron], steps=steps, lr=lr, l2=l2, low=low, high=high, seed=seed,
                       progress=progress, data=data, prior=prior, blur=blur, jitter=jitter)
    return found.x[0], found.histories[0]


def prototypes(model, neurons, steps: int = 200, lr: float = 0.05, l2: float = 0.01, low: float | None = None,
               high: float | None = None, seed: int = 0, progress: bool = False, data=None, prior: float = 0.5,
               blur: float = 0.0, jitter: int = 0) -> Prototypes:
    """The prototypes of several neurons [len(neurons), *input dims], all optimized at once (one batch),
    with each one's objective after each step and their scores. `data` (an array or .npy/.npz path) adds the density
    prior with weight `prior`; low and high default to the data's range, else to [0, 1]."""
    from . import compile as compile_explainer
    from .compiler import NEURON_INPUT
    from .runtime import run, session
    density = DensityPrior(data) if data is not None else None
    low = (density.low if density is not None else 0.0) if low is None else float(low)
    high = (density.high if density is not None else 1.0) if high is None else float(high)
    if not high > low:
        raise NnxplainError(f"the input range needs low < high (got {low}, {high})")
    if steps < 1 or lr <= 0 or l2 < 0 or prior < 0 or blur < 0 or jitter < 0:
        raise NnxplainError(f"steps >= 1, lr > 0 and l2, prior, blur, jitter >= 0 are needed (got {steps}, {lr}, "
                            f"{l2}, {prior}, {blur}, {jitter})")
    neurons = [int(k) for k in neurons]
    if not neurons:
        raise NnxplainError("give at least one neuron")
    explainer = compile_explainer(model, ["gradient"], neuron_selection="index")
    sess = session(explainer)
    inputs = [m for m in sess.get_inputs() if m.name != NEURON_INPUT]
    if len(inputs) != 1:
        raise NnxplainError(f"the model has {len(inputs)} inputs; prototype takes models with one")
    meta = inputs[0]
    dims = [d if isinstance(d, int) else None for d in meta.shape[1:]]
    if None in dims:
        raise NnxplainError(f"input '{meta.name}' has dynamic dims {meta.shape}; prototype needs a fixed input shape")
    if density is not None and list(density.shape) != dims:
        raise NnxplainError(f"the data's inputs are shaped {list(density.shape)}, the model's {dims}")
    scores_name, grad_name = explainer.graph.output[0].name, explainer.graph.output[-1].name
    batch = isinstance(meta.shape[0], int) and meta.shape[0]  # a model exported with a fixed batch size
    if batch and batch != len(neurons):
        if batch != 1:
            raise NnxplainError(f"input '{meta.name}' has a fixed batch size {batch}; prototype needs 1 or a dynamic one")
        return _one_by_one(model, neurons, steps, lr, l2, low, high, seed, progress, data, prior, blur, jitter)
    outputs = run(sess, [scores_name], {meta.name: np.zeros([len(neurons)] + dims, np.float32),
                                       NEURON_INPUT: np.zeros(len(neurons), np.int64)})[0]
    classes = int(np.prod(outputs.shape[1:]))
    wrong = [k for k in neurons if not 0 <= k < classes]
    if wrong:
        raise NnxplainError(f"--neuron {wrong[0]}: the output has neurons 0..{classes - 1}")
    rng = np.random.default_rng(seed)
    shape = [len(neurons)] + dims
    if density is not None:
        centre = density.mean.reshape(dims)
        x = np.broadcast_to(centre, shape).astype(np.float64)
    else:
        centre = np.zeros(dims)
        x = np.full(shape, (low + high) / 2) + 0.01 * (high - low) * rng.standard_normal(shape)
    x = np.clip(x, low, high).astype(np.float32)
    feeds = {NEURON_INPUT: np.asarray(neurons, np.int64)}
    rows = np.arange(len(neurons))

    def objective(scores, x):
        value = scores.reshape(len(neurons), -1)[rows, neurons] - l2 * ((x - centre) ** 2).reshape(len(x), -1).sum(1)
        if density is not None and prior:
            value = value + prior * density.log_density(x)
        return value

    histories = [[] for _ in neurons]
    for step in tqdm(range(steps), desc="prototype", disable=not progress):
        shift = tuple(rng.integers(-jitter, jitter + 1, size=2)) if jitter and len(dims) >= 2 else (0, 0)
        seen = np.roll(x, shift, axis=(-2, -1)) if jitter else x
        scores, grad = run(sess, [scores_name, grad_name], {meta.name: seen, **feeds})
        if jitter:
            grad = np.roll(grad, tuple(-s for s in shift), axis=(-2, -1))
        for h, v in zip(histories, objective(scores, x)):
            h.append(float(v))
        g = grad.astype(np.float64) - 2 * l2 * (x - centre)
        if density is not None and prior:
            g += prior * density.gradient(x)
        scale = np.abs(g.reshape(len(g), -1)).max(1).reshape([-1] + [1] * len(dims))
        x = np.clip(x + lr * (high - low) * np.where(scale > 0, g / np.where(scale > 0, scale, 1), 0), low, high)
        if blur and (step + 1) % BLUR_EVERY == 0:
            x = np.clip(gaussian_blur(x, blur), low, high)
        x = x.astype(np.float32)
    scores = run(sess, [scores_name], {meta.name: x, **feeds})[0]
    for h, v in zip(histories, objective(scores, x)):
        h.append(float(v))
    return Prototypes(x, histories, scores.reshape(len(x), -1), low, high)


def _one_by_one(model, neurons, *args) -> Prototypes:
    found = [prototypes(model, [k], *args) for k in neurons]
    return Prototypes(np.concatenate([f.x for f in found]), [f.histories[0] for f in found],
                      np.concatenate([f.scores for f in found]), found[0].low, found[0].high)


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """x [N, ..., H, W] smoothed over its last two axes by a Gaussian of `sigma` pixels (edges repeated)."""
    radius = max(1, int(np.ceil(2 * sigma)))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    out = np.asarray(x, np.float64)
    for axis in (-2, -1):
        padded = np.pad(out, [(0, 0)] * (out.ndim - 2) + ([(radius, radius), (0, 0)] if axis == -2 else
                                                          [(0, 0), (radius, radius)]), mode="edge")
        length = out.shape[axis]
        out = sum(w * np.take(padded, np.arange(i, i + length), axis=axis) for i, w in enumerate(kernel))
    return out
