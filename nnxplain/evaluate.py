"""Perturbation analysis (pixel flipping; Samek et al. 2017, iNNvestigate, PatternNet Fig. 4a).

Each image is split into square regions; the regions are ordered by their summed relevance (all
channels), and the most relevant are perturbed first, one more region per step. After every step the
model's score for the class it predicted on the unperturbed image is recorded. A method whose ordering
finds the evidence makes the score fall fast. AOPC, the area over the perturbation curve, scores that:

    AOPC = 1/(K+1) * sum_{k=0..K} mean over images of (f(x) - f(x after k steps))

(higher is better). A random ordering of the regions always runs as the baseline (`random`).
All forward runs are batched through ONNX Runtime.
"""
from __future__ import annotations

import io

import numpy as np
from tqdm import tqdm

from .errors import NnxplainError
from .params import scoped
from .scores import Scorer  # noqa: F401  (nnxplain.evaluate.Scorer, as before)

PERTURBATIONS = ("mean", "zeros", "gaussian", "invert")
RANDOM = "random"
MIN_REGIONS = 4  # regions an image must have for the ordering to matter


def default_region(shape) -> int:
    """9x9 pixels (iNNvestigate's region_shape), smaller for small images so there are at least 4x4 regions."""
    return max(1, min(9, min(shape[-2:]) // 4))


def region_relevance(relevance: np.ndarray, region: int) -> np.ndarray:
    """[N, rows, cols]: relevance summed over channels and over each region (edge regions may be smaller)."""
    n, _, h, w = relevance.shape
    rows, cols = -(-h // region), -(-w // region)
    padded = np.zeros((n, rows * region, cols * region), np.float64)
    padded[:, :h, :w] = relevance.sum(1)
    return padded.reshape(n, rows, region, cols, region).sum((2, 4))


def perturb(x: np.ndarray, masks: np.ndarray, how: str, stats: dict, rng) -> np.ndarray:
    """x [N, C, H, W] with the pixels where masks [N, H, W] is true replaced as `how` says."""
    m = np.broadcast_to(masks[:, None], x.shape)
    if how == "zeros":
        fill = np.zeros_like(x)
    elif how == "mean":  # each region's own mean per channel
        fill = stats["region_mean"]
    elif how == "gaussian":  # noise with the data's per-channel mean and standard deviation
        fill = stats["mean"] + stats["std"] * rng.standard_normal(x.shape).astype(x.dtype)
    elif how == "invert":  # reflected in the data range
        fill = stats["low"] + stats["high"] - x
    else:
        raise NnxplainError(f"perturbation must be one of {', '.join(PERTURBATIONS)}, got '{how}'")
    return np.where(m, fill, x).astype(x.dtype)


def _region_mean(x, region):
    n, c, h, w = x.shape
    rows, cols = -(-h // region), -(-w // region)
    out = np.empty_like(x)
    for i in range(rows):
        for j in range(cols):
            sl = (slice(None), slice(None), slice(i * region, (i + 1) * region), slice(j * region, (j + 1) * region))
            out[sl] = x[sl].mean((2, 3), keepdims=True)
    return out


def perturbation_curve(scorer: Scorer, x: np.ndarray, relevance: np.ndarray, classes: np.ndarray, region: int,
                       steps: int, how: str, seed: int = 0) -> np.ndarray:
    """[steps + 1, N]: the score of each image's class after perturbing 0..steps most relevant regions."""
    rng = np.random.default_rng(seed)
    n, _, h, w = x.shape
    order = np.argsort(-region_relevance(relevance, region).reshape(n, -1), axis=1, kind="stable")
    cols = -(-w // region)
    stats = {"region_mean": _region_mean(x, region), "mean": x.mean((0, 2, 3), keepdims=True),
             "std": x.std((0, 2, 3), keepdims=True), "low": x.min(), "high": x.max()}
    masks = np.zeros((n, h, w), bool)
    every = np.arange(n)
    curve = [scorer(x)[every, classes]]  # step by step: memory holds one perturbed copy of x, not steps + 1
    for k in range(steps):
        r, c = np.divmod(order[:, k], cols)
        for i in range(n):
            masks[i, r[i] * region:(r[i] + 1) * region, c[i] * region:(c[i] + 1) * region] = True
        curve.append(scorer(perturb(x, masks, how, stats, rng))[every, classes])
    return np.stack(curve)


def aopc(curve: np.ndarray) -> float:
    """Area over the perturbation curve: the mean drop of the score over steps 0..K and images."""
    return float((curve[:1] - curve).mean())


def evaluate(model, methods: list[str], x: np.ndarray, region: int | None = None, steps: int | None = None,
             perturbation: str = "zeros", params: dict | None = None, seed: int = 0, progress: bool = True,
             patterns=None) -> dict:
    """{method: curve [steps + 1] (mean score over the images)} for each method and the random baseline,
    plus "aopc" {method: AOPC}."""
    x = images(x)
    evaluation = Evaluation(model, methods, x.shape, region, steps, perturbation, params, seed, patterns)
    return evaluation.result(evaluation.sums(x, progress=progress))


def images(x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim != 4:
        raise NnxplainError(f"perturbation analysis takes images [N, C, H, W]; the data has shape {list(x.shape)}")
    return x


class Evaluation:
    """The perturbation analysis of `methods`, one batch at a time. Made once (the explainers are
    compiled here), then `sums(x, index)` per batch: {method: the curves summed over the batch's
    images} and the image count, which add up over batches (`add`); `result` turns the totals into
    mean curves and AOPC. Each batch draws its randomness (the random ordering, gaussian fill,
    sampling noise) from `batch_seed(seed, index)`, and gaussian / invert perturbations use the
    batch's own statistics: any engine that cuts the data into the same batches gets the same numbers."""

    def __init__(self, model, methods: list[str], shape, region: int | None = None, steps: int | None = None,
                 perturbation: str = "zeros", params: dict | None = None, seed: int = 0, patterns=None):
        from .analyzer import create_analyzer
        if perturbation not in PERTURBATIONS:
            raise NnxplainError(f"perturbation must be one of {', '.join(PERTURBATIONS)}, got '{perturbation}'")
        if len(shape) != 4:
            raise NnxplainError(f"perturbation analysis takes images [N, C, H, W]; the data has shape {list(shape)}")
        region = default_region(shape) if region is None else region
        if region < 1:
            raise NnxplainError(f"region must be at least 1 pixel, got {region}")
        h, w = shape[2:]
        total = (-(-h // region)) * (-(-w // region))
        if total < MIN_REGIONS:  # one region: every ordering is the same, and AOPC says nothing
            largest = max(r for r in range(1, max(h, w) + 1) if (-(-h // r)) * (-(-w // r)) >= MIN_REGIONS)
            raise NnxplainError(f"region {region} splits {h}x{w} images into {total} region(s); the ordering of "
                                f"regions that is evaluated needs at least {MIN_REGIONS} (region at most {largest} "
                                f"pixels here)")
        steps = total if steps is None else steps
        if not 1 <= steps <= total:
            raise NnxplainError(f"steps must be between 1 and the number of regions ({total}), got {steps}")
        self.model, self.region, self.steps, self.perturbation, self.seed = model, region, steps, perturbation, seed
        self.names = [m for m in methods if m != RANDOM] + [RANDOM]
        self.explainers = {}
        for name in self.names:
            if name == RANDOM:
                continue
            analyzer = create_analyzer(name, model, patterns=patterns, **_own(name, params or {}))
            if analyzer.model is None and analyzer.method.kind != "perturbation":
                raise NnxplainError(f"method '{name}' needs fitted patterns: pass --patterns PATTERNS.npz "
                                    f"(from `nnxplain fit`), or patterns= in Python")
            self.explainers[name] = analyzer
        self.scorer = None
        self.threads = 0  # ONNX Runtime's intra-op threads where it runs (0: one per core)

    def setup(self):
        """Make the sessions (once, where the evaluation runs)."""
        if self.scorer is None:
            from .runtime import session
            self.scorer = Scorer(self.model, threads=self.threads)
            for explainer in self.explainers.values():  # the sessions of this process, with its threads
                if explainer.model is None:  # kind "perturbation": runs the model itself, through the scorer
                    explainer._scorer = self.scorer
                else:
                    explainer._session = session(explainer.model, threads=self.threads)

    def __getstate__(self):  # sessions are made where the evaluation runs
        return dict(self.__dict__, scorer=None)

    def sums(self, x: np.ndarray, index: int = 0, progress: bool = False) -> dict:
        """{"images": n, "curves": {method: curve [steps + 1] summed over the images}} of one batch."""
        from .data import batch_seed
        x = images(x)
        self.setup()
        seed = batch_seed(self.seed, index)
        classes = self.scorer(x).argmax(1)
        curves = {}
        for name in tqdm(self.names, desc="perturbation analysis", disable=not progress, unit="method"):
            explainer = self.explainers.get(name)
            if name == RANDOM:
                relevance = np.random.default_rng(seed).standard_normal(x.shape)
            else:
                relevance = explainer.analyze(x, batch_index=index)
            curve = perturbation_curve(self.scorer, x, relevance, classes, self.region, self.steps,
                                       self.perturbation, seed)
            curves[name] = curve.astype(np.float64).sum(1)
        return {"images": len(x), "curves": curves}

    @staticmethod
    def add(totals: dict | None, sums: dict | None) -> dict | None:
        if totals is None or sums is None:
            return sums if totals is None else totals
        return {"images": totals["images"] + sums["images"],
                "curves": {k: v + sums["curves"][k] for k, v in totals["curves"].items()}}

    def result(self, totals: dict | None) -> dict:
        if not totals or totals["images"] == 0:
            raise NnxplainError("the data holds no images to evaluate on")
        curves = {name: total / totals["images"] for name, total in totals["curves"].items()}
        scores = {name: aopc(curve) for name, curve in curves.items()}  # the mean curve's AOPC is the images' mean
        return {"curves": curves, "aopc": scores, "region": self.region, "steps": self.steps,
                "perturbation": self.perturbation, "images": totals["images"]}


def _own(name, params):
    """The parameters (`key` or `method.key`) that method `name` has."""
    from .methods import load_method
    return scoped(params, name, load_method(name).settable())


def table(result: dict) -> str:
    width = max(len(n) for n in result["aopc"]) + 2
    lines = [f"{'method':<{width}} AOPC", f"{'-' * width} --------"]
    for name, value in sorted(result["aopc"].items(), key=lambda kv: -kv[1]):
        lines.append(f"{name:<{width}} {value:8.4f}")
    return "\n".join(lines)


def csv_bytes(result: dict) -> bytes:
    names = list(result["curves"])
    lines = ["step," + ",".join(names)]
    for k in range(result["steps"] + 1):
        lines.append(f"{k}," + ",".join(f"{result['curves'][n][k]:.6g}" for n in names))
    return ("\n".join(lines) + "\n").encode()


def plot_bytes(result: dict) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, curve in result["curves"].items():
        ax.plot(np.arange(len(curve)), curve, label=f"{name} (AOPC {result['aopc'][name]:.3f})",
                linestyle="--" if name == RANDOM else "-")
    ax.set_xlabel(f"regions perturbed ({result['region']}x{result['region']} pixels, {result['perturbation']})")
    ax.set_ylabel("score of the predicted class")
    ax.set_title("perturbation analysis")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
