"""Perturbation analysis (pixel flipping; Samek et al. 2017, iNNvestigate, PatternNet Fig. 4a).

Each image is split into square regions; the regions are ordered by their summed relevance (all
channels), and the most relevant are perturbed first, one more region per step. After every step the
model's score for the class it predicted on the unperturbed image is recorded. A method whose ordering
finds the evidence makes the score fall fast. AOPC, the area over the perturbation curve, scores that:

    AOPC = 1/(K+1) * sum_{k=0..K} mean over images of (f(x) - f(x after k steps))

(higher is better). A random ordering of the regions always runs as the baseline (`random`).
All forward runs are batched through ONNX Runtime. Token models are perturbed token by token instead
(TokenEvaluation below: the most relevant tokens replaced by a mask token id).
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


def evaluate(model, methods: list[str], x, region: int | None = None, steps: int | None = None,
             perturbation: str = "zeros", params: dict | None = None, seed: int = 0, progress: bool = True,
             patterns=None, mask_token: int | None = None, position: str | int | None = None) -> dict:
    """{"curves": {method: curve [steps + 1] (mean score over the images)}, "aopc": {method: AOPC}, ...}
    for each method and the random baseline. x: images [N, C, H, W]; or for a token model a dict
    {input name: array}, whose most relevant tokens are replaced by `mask_token` (evaluate_tokens;
    `position` as compile's)."""
    if isinstance(x, dict):
        if region is not None or perturbation != "zeros":
            raise NnxplainError("region and perturbation are for images; a token model's tokens are replaced by "
                                "mask_token")
        return evaluate_tokens(model, methods, x, mask_token, steps, params, seed, progress, patterns, position)
    if mask_token is not None or position is not None:
        raise NnxplainError("mask_token and position are for token models, whose inputs come as a dict "
                            "{input name: array}")
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
        self.explainers = _explainers(model, self.names, params, patterns)
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
        """{"count": n, "curves": {method: curve [steps + 1] summed over the n images}} of one batch."""
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
        return {"count": len(x), "curves": curves}

    @staticmethod
    def add(totals: dict | None, sums: dict | None) -> dict | None:
        if totals is None or sums is None:
            return sums if totals is None else totals
        return {"count": totals["count"] + sums["count"],
                "curves": {k: v + sums["curves"][k] for k, v in totals["curves"].items()}}

    def result(self, totals: dict | None) -> dict:
        return dict(mean_curves(totals, "images"), region=self.region, perturbation=self.perturbation)


def mean_curves(totals: dict | None, samples: str) -> dict:
    """{"curves": {method: mean curve}, "aopc": {method: AOPC}, "steps": K, samples: count} from the
    summed curves (`samples`: what was perturbed, images or texts)."""
    if not totals or totals["count"] == 0:
        raise NnxplainError(f"the data holds no {samples} to evaluate on")
    curves = {name: total / totals["count"] for name, total in totals["curves"].items()}
    scores = {name: aopc(curve) for name, curve in curves.items()}  # the mean curve's AOPC is the samples' mean
    steps = len(next(iter(curves.values()))) - 1
    return {"curves": curves, "aopc": scores, "steps": steps, samples: totals["count"]}


def _explainers(model, names, params, patterns, **options) -> dict:
    """{method: its Analyzer} for the methods among `names` (not the random baseline)."""
    from .analyzer import create_analyzer
    explainers = {}
    for name in names:
        if name == RANDOM:
            continue
        analyzer = create_analyzer(name, model, patterns=patterns, **options, **_own(name, params or {}))
        if analyzer.model is None and analyzer.method.kind != "perturbation":
            raise NnxplainError(f"method '{name}' needs fitted patterns: pass --patterns PATTERNS.npz "
                                f"(from `nnxplain fit`), or patterns= in Python")
        explainers[name] = analyzer
    return explainers


# ------------------------------------------------------------------------------ token models
#
# A token model (int ids in: BERT, GPT-2) is perturbed token by token. Each method's relevance per
# token orders a text's positions, most relevant first; step k replaces the k most relevant tokens
# with `mask_token` (the [MASK] or pad id) in the ids that the explained embedding lookup reads.
# Padding (attention_mask 0) is never replaced. The score is the explained one: the class predicted
# on the unperturbed text, at the explanation's position for an output [batch, positions, scores]
# (a causal language model's last). AOPC is the image path's, over texts.


def token_order(relevance: np.ndarray, attended: np.ndarray) -> np.ndarray:
    """[N, seq]: each text's positions, most relevant first (ties by position), its padding last."""
    keys = np.where(attended, -np.asarray(relevance, np.float64), np.inf)
    return np.argsort(keys, axis=1, kind="stable")


def token_curve(scorer, feeds: dict, ids: str, relevance: np.ndarray, attended: np.ndarray, classes: np.ndarray,
                steps: int, mask_token: int) -> np.ndarray:
    """[steps + 1, N]: the score of each text's class with its 0..steps most relevant tokens (input
    `ids` of `feeds`) replaced by mask_token. A text with fewer tokens than steps keeps its last score."""
    order = token_order(relevance, attended)
    every = np.arange(len(order))
    replaced = np.zeros(order.shape, bool)
    curve = [scorer(feeds)[every, classes]]
    for k in range(steps):
        position = order[:, k]
        replaced[every, position] |= attended[every, position]
        perturbed = dict(feeds, **{ids: np.where(replaced, feeds[ids].dtype.type(mask_token), feeds[ids])})
        curve.append(scorer(perturbed)[every, classes])
    return np.stack(curve)


def attended_positions(feeds: dict, ids: str) -> np.ndarray:
    """[N, seq] bool: the positions that are tokens of the text, not padding (attention_mask 0)."""
    from .text import MASK
    mask = feeds.get(MASK)
    if mask is None or np.shape(mask) != feeds[ids].shape:
        return np.ones(feeds[ids].shape, bool)
    return np.asarray(mask) != 0


class TokenEvaluation(Evaluation):
    """The perturbation analysis of `methods` on a token model, one batch of texts at a time (as
    Evaluation: `sums(feeds, index)` per batch, `add`, `result`). `longest`: the most tokens a text
    of the data has, the default and largest number of steps. `position`: as compile's."""

    def __init__(self, model, methods: list[str], longest: int, mask_token: int | None, steps: int | None = None,
                 params: dict | None = None, seed: int = 0, patterns=None, position: str | int | None = None):
        from .compiler import position_of
        from .methods import load_method
        if mask_token is None:
            raise NnxplainError("a token model is perturbed by replacing its most relevant tokens with a token id: "
                                "give --mask-token ID (Python: mask_token=), e.g. the [MASK] or pad token's id")
        steps = longest if steps is None else steps
        if not 1 <= steps <= longest:
            raise NnxplainError(f"steps must be between 1 and the most tokens a text has ({longest}), got {steps}")
        self.names = [m for m in methods if m != RANDOM] + [RANDOM]
        for name in self.names[:-1]:
            if load_method(name).kind == "perturbation":
                raise NnxplainError(f"method '{name}' perturbs images; a token model is evaluated with compiled "
                                    f"methods (gradient, integrated_gradients, attn_lrp, ...)")
        if len(self.names) == 1:
            raise NnxplainError("give at least one method to evaluate (the random baseline always runs)")
        self.ids, rows = explained_lookup(model)
        if isinstance(mask_token, bool) or not isinstance(mask_token, (int, np.integer)) or not 0 <= mask_token < rows:
            raise NnxplainError(f"mask token {mask_token!r} is not a token id of the model: input '{self.ids}' looks "
                                f"up an embedding table of {rows} rows (ids 0..{rows - 1})")
        self.explainers = _explainers(model, self.names, params, patterns, position=position)
        self.position = position_of(next(iter(self.explainers.values())).model)
        self.model, self.steps, self.mask_token, self.seed = model, steps, int(mask_token), seed
        self.scorer = None
        self.threads = 0

    def setup(self):
        if self.scorer is None:
            from .runtime import session
            self.scorer = Scorer(self.model, threads=self.threads, position=self.position)
            for explainer in self.explainers.values():
                explainer._session = session(explainer.model, threads=self.threads)

    def sums(self, feeds: dict, index: int = 0, progress: bool = False) -> dict:
        """{"count": n, "curves": {method: curve [steps + 1] summed over the n texts}} of one batch of
        texts, `feeds` {input name: array [n, ...]}."""
        from .data import batch_seed
        from .text import per_token
        self.setup()
        seed = batch_seed(self.seed, index)
        attended = attended_positions(feeds, self.ids)
        classes = self.scorer(feeds).argmax(1)
        curves = {}
        for name in tqdm(self.names, desc="perturbation analysis", disable=not progress, unit="method"):
            if name == RANDOM:
                relevance = np.random.default_rng(seed).standard_normal(attended.shape)
            else:
                relevance = per_token(self.explainers[name].analyze(feeds, batch_index=index), name)
            curve = token_curve(self.scorer, feeds, self.ids, relevance, attended, classes, self.steps,
                                self.mask_token)
            curves[name] = curve.astype(np.float64).sum(1)
        return {"count": len(attended), "curves": curves}

    def result(self, totals: dict | None) -> dict:
        return dict(mean_curves(totals, "texts"), mask_token=self.mask_token, position=self.position)


def longest_text(feeds: dict) -> int:
    """The most tokens a text has: attention_mask's ones, else the sequence length of the inputs [N, seq]."""
    from .text import MASK
    mask = feeds.get(MASK)
    if mask is not None and mask.ndim == 2:
        return int((mask != 0).sum(1).max())
    return max((v.shape[1] for v in feeds.values() if v.ndim >= 2), default=0)


def explained_lookup(model) -> tuple[str, int]:
    """(the input of token ids whose embeddings are explained, the rows of their table), as compile
    finds them (nnxplain.explained)."""
    from .canonicalize import canonical_graph
    from .explained import explained_inputs, fed_input, table_of
    explained = explained_inputs(canonical_graph(model))[0]
    table = table_of(explained)
    if table is None:
        raise NnxplainError(f"the model's explained input '{explained.name}' is no embedding lookup of token ids; "
                            f"replacing tokens is for token models (images: evaluate without mask_token)")
    return fed_input(explained), table.shape[0]


def token_feeds(model, x) -> dict:
    """{input name: array} for every input of a token model, from x: {input name: array}, or the path
    of an .npz holding them by name; checked against the model's inputs."""
    from .analyzer import model_feeds
    from .load import load
    from .runtime import session
    from .text import read_inputs
    inputs = session(load(model)).get_inputs()
    feeds = model_feeds(inputs, x) if isinstance(x, dict) else read_inputs(str(x), inputs)[0]
    if not len(next(iter(feeds.values()))):
        raise NnxplainError("the data holds no texts to evaluate on")
    return feeds


def evaluate_tokens(model, methods: list[str], x, mask_token: int | None, steps: int | None = None,
                    params: dict | None = None, seed: int = 0, progress: bool = True, patterns=None,
                    position: str | int | None = None, batch_size: int = 64) -> dict:
    """The perturbation analysis on a token model (see above): {"curves": {method: mean curve
    [steps + 1]}, "aopc": {method: AOPC}, "steps", "texts", "mask_token", "position"}, for each
    method and the random baseline. x: {input name: array} or an .npz of them by name."""
    if batch_size < 1:
        raise NnxplainError(f"batch size must be at least 1, got {batch_size}")
    feeds = token_feeds(model, x)
    n = len(next(iter(feeds.values())))
    evaluation = TokenEvaluation(model, methods, longest_text(feeds), mask_token, steps, params, seed, patterns, position)
    totals = None
    for index, start in enumerate(tqdm(range(0, n, batch_size), desc="perturbation analysis", disable=not progress,
                                       unit="batch")):
        totals = evaluation.add(totals, evaluation.sums({k: v[start:start + batch_size] for k, v in feeds.items()},
                                                        index))
    return evaluation.result(totals)


def _own(name, params):
    """The parameters (`key` or `method.key`) that method `name` has."""
    from .methods import load_method
    return scoped(params, name, load_method(name).settable())


def summary(result: dict) -> str:
    """One line: what was perturbed, how, in how many steps."""
    if "mask_token" in result:
        where = "" if result["position"] is None else f", scored at position {_position(result)}"
        return (f"perturbation analysis: {result['texts']} texts, tokens replaced by id {result['mask_token']}, "
                f"{result['steps']} steps{where}")
    return (f"perturbation analysis: {result['images']} images, {result['region']}x{result['region']} regions, "
            f"{result['steps']} steps, {result['perturbation']}")


def _position(result: dict) -> str:
    return f"{result['position']}" + (" (the last)" if result["position"] == -1 else "")


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
    if "mask_token" in result:
        ax.set_xlabel(f"tokens replaced by id {result['mask_token']}")
    else:
        ax.set_xlabel(f"regions perturbed ({result['region']}x{result['region']} pixels, {result['perturbation']})")
    where = "" if result.get("position") is None else f" at position {_position(result)}"
    ax.set_ylabel(f"score of the predicted class{where}")
    ax.set_title("perturbation analysis")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
