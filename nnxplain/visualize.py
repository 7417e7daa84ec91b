"""Pictures of explanations (iNNvestigate's visualisations), drawn with matplotlib.

Every function takes one sample's explanation shaped like the input without the batch dimension,
[C, H, W] (or [H, W]), and returns an RGB image [H, W, 3] with values in [0, 1]:

- `heatmap`: signed, diverging colours (blue negative, white 0, red positive), scaled by max |r|;
- `graymap`: absolute values in gray, scaled by max |r|;
- `project`: a signal (PatternNet, Guided Backprop, Deconvnet) projected into the input range,
  r / max |r| mapped from [-1, 1] to [low, high], keeping the channels (colour stays colour);
- `overlay`: the heatmap blended over the input in gray.

Channels reduce by `sum` (signed) or `norm` (the L2 norm over channels, unsigned).
"""
from __future__ import annotations

import io

import numpy as np

from .errors import NnxplainError

KINDS = ("heatmap", "graymap", "project", "overlay")
REDUCTIONS = ("sum", "norm")


def reduce_channels(r: np.ndarray, how: str = "sum") -> np.ndarray:
    r = np.asarray(r, np.float64)
    if r.ndim == 2:
        return r
    if r.ndim != 3:
        raise NnxplainError(f"pictures are drawn of images [C, H, W]; got an explanation of shape {list(r.shape)}")
    if how == "sum":
        return r.sum(0)
    if how == "norm":
        return np.sqrt((r * r).sum(0))
    raise NnxplainError(f"channel reduction must be one of {', '.join(REDUCTIONS)}, got '{how}'")


def _scaled(a: np.ndarray) -> np.ndarray:
    m = np.abs(a).max()
    return a / m if m > 0 else np.zeros_like(a)


def heatmap(r, reduce: str = "sum", cmap: str = "bwr") -> np.ndarray:
    import matplotlib
    values = (_scaled(reduce_channels(r, reduce)) + 1) / 2  # -max -> 0, 0 -> 0.5, +max -> 1
    return matplotlib.colormaps[cmap](values)[..., :3]


def graymap(r, reduce: str = "sum") -> np.ndarray:
    values = np.abs(_scaled(reduce_channels(r, reduce)))
    return np.repeat(values[..., None], 3, axis=-1)


def project(r, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """The signal in the input range [low, high], channels kept (1 channel: gray); shown in [0, 1]."""
    r = np.asarray(r, np.float64)
    if r.ndim == 3:
        r = r.transpose(1, 2, 0)
    scaled = (_scaled(r) + 1) / 2 * (high - low) + low
    return as_rgb(scaled, low, high)


def as_rgb(image, low: float | None = None, high: float | None = None) -> np.ndarray:
    """An input [C, H, W] (or [H, W, C], [H, W]) as RGB in [0, 1]: 1 channel gray, 3 colour, else the mean."""
    a = np.asarray(image, np.float64)
    if a.ndim == 1:  # a vector input: one row of pixels
        a = a[None]
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[-1] != 3:
        a = a.mean(-1)
    low = a.min() if low is None else low
    high = a.max() if high is None else high
    a = np.clip((a - low) / (high - low), 0, 1) if high > low else np.zeros_like(a)
    return np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a


def overlay(r, x, reduce: str = "sum", alpha: float = 0.6) -> np.ndarray:
    gray = as_rgb(x).mean(-1, keepdims=True)
    return np.clip((1 - alpha) * gray + alpha * heatmap(r, reduce), 0, 1)


def picture(kind: str, r, x=None, reduce: str = "sum", low: float | None = None, high: float | None = None):
    if kind == "heatmap":
        return heatmap(r, reduce)
    if kind == "graymap":
        return graymap(r, reduce)
    if kind == "project":
        lo = 0.0 if low is None else low
        hi = 1.0 if high is None else high
        return project(r, lo, hi)
    if kind == "overlay":
        return overlay(r, x, reduce)
    raise NnxplainError(f"picture kind must be one of {', '.join(KINDS)}, got '{kind}'")


def default_kind(method: str) -> str:
    """Signal methods are projected into the input range, attributions drawn as heatmaps."""
    signal = ("pattern.net", "patternnet", "guided_backprop", "deconvnet", "input")
    return "project" if method in signal else "heatmap"


def grid_png(x: np.ndarray, explanations: dict, scores: np.ndarray | None = None, kinds: dict | None = None,
             reduce: str = "sum", cell: float = 1.6) -> bytes:
    """Inputs times methods (iNNvestigate paper, Fig. 1): the first column the input, then one column per
    method; each row labelled with the predicted class and its score."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x = np.asarray(x)
    names = list(explanations)
    low, high = float(x.min()), float(x.max())
    rows, cols = len(x), len(names) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, cell * rows + 0.3), dpi=100, squeeze=False)
    for i in range(rows):
        images = [as_rgb(x[i], low, high)] + [
            picture((kinds or {}).get(n) or default_kind(n), explanations[n][i], x[i], reduce, low, high)
            for n in names]
        for j, image in enumerate(images):
            ax = axes[i][j]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("input" if j == 0 else names[j - 1], fontsize=8)
        if scores is not None:
            k = int(np.argmax(scores[i]))
            axes[i][0].set_ylabel(f"class {k}\nscore {float(scores[i][k]):.2f}", fontsize=8)
    fig.tight_layout()
    return _png(fig, plt)


def image_png(images: list[np.ndarray], scale: int = 8) -> bytes:
    """Several RGB images side by side, each pixel drawn as scale x scale (Pillow)."""
    from PIL import Image
    strip = np.concatenate([np.pad(im, ((1, 1), (1, 1), (0, 0)), constant_values=1.0) for im in images], axis=1)
    pixels = (np.clip(strip, 0, 1) * 255 + 0.5).astype(np.uint8)
    picture_ = Image.fromarray(pixels, "RGB")
    picture_ = picture_.resize((picture_.width * scale, picture_.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture_.save(buffer, format="PNG")
    return buffer.getvalue()


def _png(fig, plt) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
