"""Activation maximization (Simonyan et al. 2014; the LRP tutorial's "prototype"): the input that
maximizes one output neuron, found by gradient ascent with the compiled gradient graph.

    maximize  f_k(x) - l2 * ||x||^2   subject to  low <= x <= high

f_k is the neuron's score (pre-softmax, as every explainer explains it). Each step moves x by
`lr` times the objective's gradient scaled to unit max-norm (a normalized ascent, so the step size
does not depend on the score's scale), then clips x to [low, high] (projected gradient ascent). x
starts at the middle of the range plus a little seeded noise.
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from .errors import NnxplainError


def prototype(model, neuron: int, steps: int = 200, lr: float = 0.05, l2: float = 0.01, low: float = 0.0,
              high: float = 1.0, seed: int = 0, progress: bool = False) -> tuple[np.ndarray, list[float]]:
    """(the prototype, shaped like one input without the batch dimension; the objective after each step)."""
    from . import compile as compile_explainer
    from .compiler import NEURON_INPUT
    from .runtime import run, session
    if not high > low:
        raise NnxplainError(f"the input range needs low < high (got {low}, {high})")
    if steps < 1 or lr <= 0 or l2 < 0:
        raise NnxplainError(f"steps >= 1, lr > 0 and l2 >= 0 are needed (got {steps}, {lr}, {l2})")
    explainer = compile_explainer(model, ["gradient"], neuron_selection="index")
    sess = session(explainer)
    inputs = [m for m in sess.get_inputs() if m.name != NEURON_INPUT]
    if len(inputs) != 1:
        raise NnxplainError(f"the model has {len(inputs)} inputs; prototype takes models with one")
    meta = inputs[0]
    dims = [1] + [d if isinstance(d, int) else None for d in meta.shape[1:]]
    if None in dims:
        raise NnxplainError(f"input '{meta.name}' has dynamic dims {meta.shape}; prototype needs a fixed input shape")
    scores_name, grad_name = explainer.graph.output[0].name, explainer.graph.output[-1].name
    outputs = run(sess, [scores_name], {meta.name: np.zeros(dims, np.float32),
                                       NEURON_INPUT: np.zeros(1, np.int64)})[0]
    classes = int(np.prod(outputs.shape[1:]))
    if not 0 <= neuron < classes:
        raise NnxplainError(f"--neuron {neuron}: the output has neurons 0..{classes - 1}")
    rng = np.random.default_rng(seed)
    x = (np.full(dims, (low + high) / 2) + 0.01 * (high - low) * rng.standard_normal(dims)).astype(np.float32)
    history = []
    feeds = {NEURON_INPUT: np.array([neuron], np.int64)}
    for _ in tqdm(range(steps), desc=f"prototype of neuron {neuron}", disable=not progress):
        scores, grad = run(sess, [scores_name, grad_name], {meta.name: x, **feeds})
        history.append(float(scores.reshape(-1)[neuron] - l2 * np.sum(x.astype(np.float64) ** 2)))
        step = grad - 2 * l2 * x
        scale = np.abs(step).max()
        if scale == 0:
            break
        x = np.clip(x + lr * (high - low) * step / scale, low, high).astype(np.float32)
    scores = run(sess, [scores_name], {meta.name: x, **feeds})[0]
    history.append(float(scores.reshape(-1)[neuron] - l2 * np.sum(x.astype(np.float64) ** 2)))
    return x[0], history
