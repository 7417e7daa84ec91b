"""Model-agnostic explanations from batched forward runs through ONNX Runtime: occlusion and LIME,
the algorithms of the methods of kind "perturbation" (rules/occlusion.toml, rules/lime.toml: their
parameters and defaults; a method file names its algorithm with `perturbation = "..."`).

These are not compiled backward passes: they run the model (its first output, Softmax removed as in
every explainer) on many perturbed copies of the input, in batches, and explain the selected output
(each sample's largest score, or `neuron` per sample).

- occlusion (Zeiler & Fergus 2014; Captum's Occlusion): a patch of `fill` slides over the image with
  `stride`, covering all channels (where the stride does not divide side - patch, the last patch is
  cut at the edge, as in Captum); every pixel gets the mean drop of the score over the patch positions
  that cover it.
- lime (Ribeiro et al. 2016): the image is cut into segments on a grid of `segment` x `segment`
  pixels; `samples` random on/off patterns of the segments (each on with probability 1/2) are
  scored with the off segments set to `fill`; the patterns are weighted by the exponential kernel
  sqrt(exp(-d^2 / kernel_width^2)) of their cosine distance d to the all-on pattern, and a weighted
  ridge regression (`alpha`) of the scores on the patterns gives each segment its weight, which all
  its pixels receive.
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from .errors import NnxplainError
from .scores import Scorer


def _images(x):
    x = np.asarray(x, np.float32)
    if x.ndim != 4:
        raise NnxplainError(f"occlusion and lime take images [N, C, H, W]; the data has shape {list(x.shape)}")
    return x


def _targets(scores, neuron):
    if neuron is None:
        return scores.argmax(1)
    neuron = np.broadcast_to(np.asarray(neuron, np.int64), (len(scores),))
    if (neuron < 0).any() or (neuron >= scores.shape[1]).any():
        raise NnxplainError(f"neuron must be between 0 and {scores.shape[1] - 1}")
    return neuron


def occlusion(model, x, patch: int = 2, stride: int = 1, fill: float = 0.0, neuron=None, progress: bool = False,
              scorer=None) -> np.ndarray:
    x = _images(x)
    n, c, h, w = x.shape
    if n == 0:
        return np.zeros_like(x)
    if not (1 <= patch <= min(h, w)) or stride < 1:
        raise NnxplainError(f"occlusion: patch must be between 1 and {min(h, w)} and stride at least 1 "
                            f"(got patch {patch}, stride {stride})")
    scorer = scorer or Scorer(model)
    base = scorer(x)
    target = _targets(base, neuron)
    # as Captum: ceil((side - patch) / stride) + 1 positions, the last one cut at the edge when the
    # stride does not divide (side - patch)
    rows = [k * stride for k in range(-(-(h - patch) // stride) + 1)]
    cols = [k * stride for k in range(-(-(w - patch) // stride) + 1)]
    total = np.zeros((n, h, w))
    count = np.zeros((h, w))
    for i in tqdm(rows, desc="occlusion", disable=not progress):
        copies = np.repeat(x[None], len(cols), axis=0)
        for k, j in enumerate(cols):
            copies[k, :, :, i:i + patch, j:j + patch] = fill
        scores = scorer(copies.reshape(-1, c, h, w)).reshape(len(cols), n, -1)
        drop = base[np.arange(n), target][None] - scores[:, np.arange(n), target]  # [positions, n]
        for k, j in enumerate(cols):
            total[:, i:i + patch, j:j + patch] += drop[k][:, None, None]
            count[i:i + patch, j:j + patch] += 1
    per_pixel = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return np.repeat(per_pixel[:, None], c, axis=1).astype(np.float32)


def grid_segments(h: int, w: int, segment: int) -> np.ndarray:
    """[H, W] segment index of each pixel: square cells of `segment` pixels, row by row."""
    cols = -(-w // segment)
    r, q = np.meshgrid(np.arange(h) // segment, np.arange(w) // segment, indexing="ij")
    return r * cols + q


def weighted_ridge(z: np.ndarray, y: np.ndarray, weights: np.ndarray, alpha: float) -> np.ndarray:
    """Coefficients b (without the intercept, which is not penalised) minimising
    sum_i weights_i (y_i - b0 - z_i b)^2 + alpha |b|^2."""
    sw = np.sqrt(weights)[:, None]
    design = np.hstack([np.ones((len(z), 1)), z]) * sw
    penalty = alpha * np.eye(design.shape[1])
    penalty[0, 0] = 0.0
    coef = np.linalg.solve(design.T @ design + penalty, design.T @ (y * sw[:, 0]))
    return coef[1:]


def lime(model, x, segment: int = 2, samples: int = 256, kernel_width: float = 0.25, alpha: float = 1.0,
         fill: float = 0.0, seed: int = 0, neuron=None, segments: np.ndarray | None = None, progress: bool = False,
         scorer=None) -> np.ndarray:
    x = _images(x)
    n, c, h, w = x.shape
    if n == 0:
        return np.zeros_like(x)
    if segment < 1 or samples < 2 or kernel_width <= 0 or alpha < 0:
        raise NnxplainError("lime: segment >= 1, samples >= 2, kernel_width > 0 and alpha >= 0 are needed "
                            f"(got {segment}, {samples}, {kernel_width}, {alpha})")
    seg = grid_segments(h, w, segment) if segments is None else np.asarray(segments)
    m = int(seg.max()) + 1
    scorer = scorer or Scorer(model)
    target = _targets(scorer(x), neuron)
    rng = np.random.default_rng(seed)
    z = (rng.random((samples, m)) < 0.5).astype(np.float64)
    z[0] = 1.0  # the unperturbed image is one of the samples, as in LIME
    cosine = 1 - z.sum(1) / np.maximum(np.sqrt(z.sum(1)) * np.sqrt(m), 1e-12)
    weights = np.sqrt(np.exp(-cosine ** 2 / kernel_width ** 2))
    keep = z[:, seg]  # [samples, H, W]
    out = np.empty((n, c, h, w), np.float32)
    for b in tqdm(range(n), desc="lime", disable=not progress):
        copies = np.where(keep[:, None] > 0, x[b][None], np.float32(fill)).astype(np.float32)
        y = scorer(copies)[:, target[b]].astype(np.float64)
        coef = weighted_ridge(z, y, weights, alpha)
        out[b] = coef[seg][None]
    return out


ALGORITHMS = {"occlusion": occlusion, "lime": lime}


def is_perturbation(name_or_path) -> bool:
    """Whether a method (a name or a method file) is of kind "perturbation" (False for what is no method)."""
    from .methods import load_method
    try:
        return load_method(name_or_path).kind == "perturbation"
    except NnxplainError:
        return False


def run(method, model, x, params: dict | None = None, neuron=None, progress: bool = False,
        scorer=None) -> np.ndarray:
    """A method of kind "perturbation" (a name, a method file or a Method) with parameters {key:
    value} (strings are converted), checked as every method's are; `scorer`: a scores.Scorer of the
    model to reuse (default: a new one)."""
    from .methods import Method, load_method
    from .runtime import nonfinite_samples
    method = method if isinstance(method, Method) else load_method(method)
    if method.kind != "perturbation":
        raise NnxplainError(f"method '{method.name}' is not of kind 'perturbation' (it compiles: nnxplain.compile)")
    method = method.with_params(params or {})
    fn = ALGORITHMS[method.perturbation]
    out = fn(model, x, neuron=neuron, progress=progress, scorer=scorer, **method.params)
    out[nonfinite_samples(np.asarray(x))] = np.nan  # as the compiled explainers: NaN, not a number that looks real
    return out
