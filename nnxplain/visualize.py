"""Pictures of explanations (iNNvestigate's and Captum's visualisations), drawn with matplotlib.

One sample's explanation is shaped like the input without the batch dimension, [C, H, W] (or
[H, W]). Each kind of picture scales it by a `scale` (by default the `percentile`-th percentile of
|r| of that picture: larger values saturate, as Captum's outlier clipping and iNNvestigate's
clip_quantile do; 100 is the plain maximum):

- `heatmap`: signed, on a diverging colour map centred at 0 (blue negative, white 0, red positive),
  -scale .. +scale;
- `graymap`: absolute values in gray, 0 .. scale;
- `project`: a signal (PatternNet, Guided Backprop, Deconvnet) projected into the input range,
  channels kept (colour stays colour): -scale .. +scale mapped to [low, high], or 0 .. scale where the
  signal has one sign (iNNvestigate's `project`, with input_is_positive_only chosen by the data);
- `overlay`: the heatmap blended over the input in gray.

Channels reduce by `sum` (signed) or `norm` (the L2 norm over channels, unsigned).

`explanation_png` (one method, several inputs) and `grid_png` (inputs times methods) draw labelled
panels: the input's index, its true class where known, the explained class and its score, the
method's name, and a colour bar in the explanation's own units for every panel. `prototypes_png`
draws activation-maximization prototypes with their class and score.

Text: `token_html` and `token_png` draw token heatmaps, one line per text, each token's background
coloured by its relevance on the same diverging map (each text on its own scale).
"""
from __future__ import annotations

import io

import numpy as np

from .errors import NnxplainError

KINDS = ("heatmap", "graymap", "project", "overlay")
REDUCTIONS = ("sum", "norm")
NORMALIZATIONS = ("image", "method")
SIGNAL_METHODS = ("pattern.net", "patternnet", "guided_backprop", "deconvnet")
MAX_PICTURES = 16  # inputs drawn in one picture at most (rows of a grid): more are not readable


def reduce_channels(r: np.ndarray, how: str = "sum") -> np.ndarray:
    r = np.asarray(r, np.float64)
    if r.ndim == 1:  # a vector input: one row of pixels
        return r[None]
    if r.ndim == 2:
        return r
    if r.ndim != 3:
        raise NnxplainError(f"pictures are drawn of images [C, H, W]; got an explanation of shape {list(r.shape)}")
    if how == "sum":
        return r.sum(0)
    if how == "norm":
        return np.sqrt((r * r).sum(0))
    raise NnxplainError(f"channel reduction must be one of {', '.join(REDUCTIONS)}, got '{how}'")


def scale_of(values, percentile: float = 100.0) -> float:
    """The `percentile`-th percentile of |values| (100: the maximum); what a picture maps to full colour."""
    if not 0 < percentile <= 100:
        raise NnxplainError(f"the percentile must be in (0, 100], got {percentile}")
    a = np.abs(np.asarray(values, np.float64))
    return float(np.percentile(a, percentile)) if a.size else 0.0


def _unit(a: np.ndarray, scale: float) -> np.ndarray:
    """a / scale clipped to [-1, 1] (0 where the scale is 0)."""
    return np.clip(a / scale, -1, 1) if scale > 0 else np.zeros_like(a)


def _channels_last(r) -> np.ndarray:
    r = np.asarray(r, np.float64)
    if r.ndim == 1:
        return r[None]
    return r.transpose(1, 2, 0) if r.ndim == 3 else r


def heatmap(r, reduce: str = "sum", cmap: str = "bwr", percentile: float = 100.0, scale: float | None = None):
    import matplotlib
    values = reduce_channels(r, reduce)
    scale = scale_of(values, percentile) if scale is None else scale
    return matplotlib.colormaps[cmap]((_unit(values, scale) + 1) / 2)[..., :3]  # -scale -> 0, 0 -> 0.5, +scale -> 1


def graymap(r, reduce: str = "sum", percentile: float = 100.0, scale: float | None = None):
    values = reduce_channels(r, reduce)
    scale = scale_of(values, percentile) if scale is None else scale
    return np.repeat(np.abs(_unit(values, scale))[..., None], 3, axis=-1)


def one_signed(r) -> bool:
    """True where the signal has one sign (then `project` uses the whole range for it)."""
    r = np.asarray(r)
    return bool((r >= 0).all() or (r <= 0).all())


def project(r, low: float = 0.0, high: float = 1.0, percentile: float = 100.0, scale: float | None = None):
    """The signal in the input range [low, high], channels kept (1 channel: gray); shown in [0, 1].
    A signal of both signs maps -scale .. +scale to [low, high] (0 in the middle); a signal of one
    sign maps 0 .. scale (or -scale .. 0) to it."""
    a = _channels_last(r)
    scale = scale_of(a, percentile) if scale is None else scale
    unit = _unit(a, scale)
    if one_signed(a):
        unit = np.abs(unit) * 2 - 1 if (a >= 0).all() else 1 - np.abs(unit) * 2
    return as_rgb((unit + 1) / 2 * (high - low) + low, low, high)


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


def overlay(r, x, reduce: str = "sum", alpha: float = 0.6, percentile: float = 100.0, scale: float | None = None):
    gray = as_rgb(x).mean(-1, keepdims=True)
    return np.clip((1 - alpha) * gray + alpha * heatmap(r, reduce, percentile=percentile, scale=scale), 0, 1)


def picture(kind: str, r, x=None, reduce: str = "sum", low: float | None = None, high: float | None = None,
            percentile: float = 100.0, scale: float | None = None):
    """One explanation as an RGB image [H, W, 3] in [0, 1]."""
    if kind == "heatmap":
        return heatmap(r, reduce, percentile=percentile, scale=scale)
    if kind == "graymap":
        return graymap(r, reduce, percentile=percentile, scale=scale)
    if kind == "project":
        return project(r, 0.0 if low is None else low, 1.0 if high is None else high, percentile, scale)
    if kind == "overlay":
        return overlay(r, x, reduce, percentile=percentile, scale=scale)
    raise NnxplainError(f"picture kind must be one of {', '.join(KINDS)}, got '{kind}'")


def default_kind(method: str, channels: int = 1) -> str:
    """Signal methods on colour inputs are projected into the input range (the signal's colour is
    information), and so is the `input` baseline (it is an input); everything else, signals of gray
    inputs included, is a signed heatmap centred at 0."""
    return "project" if (method in SIGNAL_METHODS and channels == 3) or method == "input" else "heatmap"


def _values(kind: str, r, reduce: str) -> np.ndarray:
    """What a picture of this kind scales: the reduced map, or (project) the signal with its channels."""
    return _channels_last(r) if kind == "project" else reduce_channels(r, reduce)


def picture_scales(kind: str, rs, reduce: str, percentile: float, normalize: str) -> list[float]:
    """The scale of each picture: its own (normalize = image) or one over all of them (method)."""
    if normalize not in NORMALIZATIONS:
        raise NnxplainError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got '{normalize}'")
    values = [_values(kind, r, reduce) for r in rs]
    if normalize == "method":
        return [scale_of(np.concatenate([v.ravel() for v in values]), percentile)] * len(values)
    return [scale_of(v, percentile) for v in values]


# ------------------------------------------------------------------------------------------ figures

def _colour_bar(fig, ax, kind: str, scale: float, signed: bool):
    """A thin colour bar beside `ax` in the explanation's units: -scale .. scale (0 .. scale for
    graymaps and one-signed projections)."""
    import matplotlib
    cmap = "bwr" if kind in ("heatmap", "overlay") else "gray"
    low = -scale if signed else 0.0
    mappable = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(low, scale if scale > 0 else 1.0), cmap)
    bar = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03)
    bar.set_ticks([low, scale] if not signed else [low, 0.0, scale])
    bar.ax.tick_params(labelsize=6, length=2, pad=1)
    bar.ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: _number(v)))
    bar.outline.set_linewidth(0.3)


def _number(v: float) -> str:
    if v == 0:
        return "0"
    return f"{v:.3g}" if 0.01 <= abs(v) < 1000 else f"{v:.1e}".replace("e-0", "e-").replace("e+0", "e")


def _show(ax, image):
    """imshow; an image only a few pixels high (a vector input) is stretched to the panel's height."""
    ax.imshow(image, interpolation="nearest", aspect="auto" if image.shape[0] < 4 else "equal")


def _title(fig, text: str):
    """The figure's title, wrapped to the figure's width."""
    import textwrap
    width = max(40, int(fig.get_figwidth() * 14))
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in text.split("\n")), fontsize=8)


def _draw(fig, ax, kind, r, x, reduce, low, high, scale, outline=False):
    _show(ax, picture(kind, r, x, reduce, low, high, scale=scale))
    if outline and kind != "overlay":  # the input's outline (half its range) over the explanation
        gray = as_rgb(x, low, high).mean(-1)
        if min(gray.shape) >= 2 and gray.min() < 0.5 < gray.max():  # a contour needs a 2-D image
            ax.contour(gray, levels=[0.5], colors="0.25", linewidths=0.6, alpha=0.7)
    signed = kind in ("heatmap", "overlay") or (kind == "project" and not one_signed(r))
    _colour_bar(fig, ax, kind, scale, signed)


def _clean(ax):
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_linewidth(0.3)


def explanation_png(x: np.ndarray, r: np.ndarray, method: str, labels: list[str], kind: str | None = None,
                    reduce: str = "sum", percentile: float = 99.0, normalize: str = "image",
                    columns: int | None = None, note: str = "", outline: bool = False) -> bytes:
    """One method's explanations of several inputs, each a labelled panel with a colour bar; the
    inputs' range [min, max] is the projection range of signal pictures."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x, r = np.asarray(x), np.asarray(r)
    kind = kind or default_kind(method, _channels(x))
    low, high = float(x.min()), float(x.max())
    scales = picture_scales(kind, r, reduce, percentile, normalize)
    n = len(r)
    columns = columns or min(n, 6)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 1.9 * rows + 0.55), dpi=100, squeeze=False,
                             layout="constrained")
    for i, ax in enumerate(axes.flat):
        _clean(ax)
        if i >= n:
            ax.axis("off")
            continue
        _draw(fig, ax, kind, r[i], x[i], reduce, low, high, scales[i], outline)
        ax.set_title(labels[i], fontsize=7, pad=2)
    _title(fig, f"{method} ({_legend(kind, percentile, normalize)})" + (f"\n{note}" if note else ""))
    return _png(fig, plt)


def grid_png(x: np.ndarray, explanations: dict, labels: list[str], kinds: dict | None = None, reduce: str = "sum",
             percentile: float = 99.0, normalize: str = "image", cell: float = 1.75, note: str = "",
             outline: bool = False) -> bytes:
    """Inputs times methods (iNNvestigate paper, Fig. 1): the first column the input, then one column
    per method with a colour bar per panel; each row labelled (`labels`: index, classes, score)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x = np.asarray(x)
    names = list(explanations)
    kinds = {n: (kinds or {}).get(n) or default_kind(n, _channels(x)) for n in names}
    scales = {n: picture_scales(kinds[n], explanations[n], reduce, percentile, normalize) for n in names}
    low, high = float(x.min()), float(x.max())
    rows, cols = len(x), len(names) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, cell * rows * 0.82 + 0.6), dpi=100, squeeze=False,
                             layout="constrained")
    for i in range(rows):
        ax = axes[i][0]
        _clean(ax)
        _show(ax, as_rgb(x[i], low, high))
        ax.set_ylabel(labels[i], fontsize=7)
        for j, name in enumerate(names):
            ax = axes[i][j + 1]
            _clean(ax)
            _draw(fig, ax, kinds[name], explanations[name][i], x[i], reduce, low, high, scales[name][i], outline)
        if i == 0:
            axes[0][0].set_title("input", fontsize=8)
            for j, name in enumerate(names):
                axes[0][j + 1].set_title(f"{name}\n({kinds[name]})", fontsize=7)
    legend = f"colour: {_legend('heatmap', percentile, normalize)}"
    _title(fig, legend + (f"\n{note}" if note else ""))
    return _png(fig, plt)


def prototypes_png(x: np.ndarray, labels: list[str], low: float, high: float, title: str = "") -> bytes:
    """Activation-maximization prototypes side by side (up to 5 a row), each titled, in the input range."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(x)
    columns = min(n, 5)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.75 * rows + (0.35 if title else 0)), dpi=100,
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        _clean(ax)
        if i >= n:
            ax.axis("off")
            continue
        _show(ax, as_rgb(x[i], low, high))
        ax.set_title(labels[i], fontsize=8, pad=2)
    if title:
        _title(fig, title)
    fig.tight_layout(pad=0.4, h_pad=0.5, w_pad=0.4)
    return _png(fig, plt)


def _legend(kind: str, percentile: float, normalize: str) -> str:
    colours = {"heatmap": "red positive, blue negative", "overlay": "red positive, blue negative, over the input",
               "graymap": "absolute value", "project": "the signal in the input's range"}[kind]
    clip = f"clipped at the {percentile:g}th percentile of |value|" if percentile < 100 else "scaled to the maximum |value|"
    per = "each image its own scale" if normalize == "image" else "one scale for all images"
    return f"{colours}; {per}, {clip}"


def _channels(x: np.ndarray) -> int:
    return x.shape[1] if x.ndim == 4 else 1


def image_png(images: list[np.ndarray], scale: int = 8) -> bytes:
    """Several RGB images side by side, each pixel drawn as scale x scale (Pillow; no labels: the
    per-input pictures that `analyze -o FOLDER --pictures` writes by the thousand)."""
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


# ------------------------------------------------------------------------------------------ text

def token_colours(relevance, percentile: float = 100.0) -> tuple[np.ndarray, float]:
    """The RGB colour [n, 3] in [0, 1] of each token of one text, on the diverging map centred at 0
    (blue negative, white 0, red positive) at the text's own scale; and that scale."""
    r = np.asarray(relevance, np.float64).reshape(-1)
    scale = scale_of(r[np.isfinite(r)], percentile)
    # matplotlib's "bwr" computed exactly (its 256-entry table makes 0 slightly red): linear from blue
    # through white to red
    u = _unit(np.nan_to_num(r), scale)[:, None]
    return np.where(u >= 0, [1.0, 1.0, 1.0] - u * [0.0, 1.0, 1.0], [1.0, 1.0, 1.0] + u * [1.0, 1.0, 0.0]), scale


def _ink(colour) -> str:
    """Black on light backgrounds, white on dark ones (the saturated ends of the map)."""
    return "#000" if 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 0.5 else "#fff"


def _check_texts(texts, relevance):
    if len(texts) != len(relevance):
        raise NnxplainError(f"{len(texts)} texts but {len(relevance)} explanations")
    for i, (tokens, r) in enumerate(zip(texts, relevance)):
        if len(tokens) != np.size(r):
            raise NnxplainError(f"text {i} has {len(tokens)} tokens but {np.size(r)} relevance values")


def token_html(texts: list[list[str]], relevance: list, labels: list[str] | None = None, title: str = "",
               percentile: float = 100.0) -> bytes:
    """A self-contained HTML page: one line per text, each token on a background coloured by its
    relevance (each text its own scale: full colour at the `percentile`-th percentile of its |values|);
    hovering a token shows its value. Tokens, labels and title are escaped."""
    import html
    _check_texts(texts, relevance)
    lines = []
    for i, (tokens, r) in enumerate(zip(texts, relevance)):
        colours, scale = token_colours(r, percentile)
        spans = []
        for token, value, colour in zip(tokens, np.asarray(r, np.float64).reshape(-1), colours):
            rgb = "#" + "".join(f"{int(round(c * 255)):02x}" for c in colour)
            spans.append(f'<span class="t" style="background:{rgb};color:{_ink(colour)}" '
                         f'title="{value:.4g}">{html.escape(token)}</span>')
        label = html.escape(labels[i] if labels else f"#{i}")
        lines.append(f'<div class="text"><span class="label">{label} (scale {html.escape(_number(scale))})</span> '
                     + "".join(spans) + "</div>")
    legend = html.escape(f"red positive, blue negative, white 0; {_token_scale(percentile)}; hover a token for its value")
    head = html.escape(title or "token relevance")
    page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + head + "</title><style>"
            "body{font-family:sans-serif;margin:1em}"
            ".text{margin:.5em 0;line-height:1.9}"
            ".label{color:#555;font-size:85%;margin-right:.5em}"
            ".t{white-space:pre;padding:1px 2px;margin:0 1px;border-radius:3px;border:1px solid #ddd}"
            "</style></head><body>\n<h3>" + head + "</h3>\n<p>" + legend + "</p>\n"
            + "\n".join(lines) + "\n</body></html>\n")
    return page.encode("utf-8")


def _token_scale(percentile: float) -> str:
    clip = f"the {percentile:g}th percentile of |value|" if percentile < 100 else "the maximum |value|"
    return f"each text its own scale, full colour at {clip}"


def token_png(texts: list[list[str]], relevance: list, labels: list[str] | None = None, title: str = "",
              percentile: float = 100.0, width: float = 8.0) -> bytes:
    """The token heatmap of token_html as a PNG picture, `width` inches wide: each text a labelled
    paragraph of tokens on coloured backgrounds, wrapped to the width."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.font_manager import FontProperties
    _check_texts(texts, relevance)
    size, dpi, margin, gap = 9.0, 100, 0.15, 0.04  # points, dots per inch, inches
    font = FontProperties(size=size)
    scratch = plt.figure(dpi=dpi)
    renderer = scratch.canvas.get_renderer()

    def inches(text: str) -> float:
        return renderer.get_text_width_height_descent(text, font, ismath=False)[0] / dpi
    line = size / 72 * 1.9
    placed, y = [], 0.0  # (x, y from the top, text, colour or None for a label), in inches
    for i, (tokens, r) in enumerate(zip(texts, relevance)):
        colours, scale = token_colours(r, percentile)
        y += line * (1.4 if i else 1.0)
        placed.append((margin, y, f"{labels[i] if labels else f'#{i}'} (scale {_number(scale)})", None))
        y += line
        x = margin
        for token, colour in zip(tokens, colours):
            shown = token if token.strip() else token.replace(" ", "\u2423") or "\u2205"  # a visible blank
            w = inches(shown) + 2 * gap
            if x + w > width - margin and x > margin:
                x, y = margin, y + line
            placed.append((x + gap, y, shown, colour))
            x += w + gap
    plt.close(scratch)
    head = (title + "\n" if title else "") + f"red positive, blue negative; {_token_scale(percentile)}"
    top = 0.5
    height = top + y + line
    fig = plt.figure(figsize=(width, height), dpi=dpi)
    fig.text(margin / width, 1 - 0.1 / height, head, fontsize=8, va="top", parse_math=False)
    for x, y_, text, colour in placed:
        common = dict(transform=fig.dpi_scale_trans, va="baseline", parse_math=False)
        if colour is None:
            fig.text(x, height - top - y_ + line * 0.3, text, fontsize=7, color="0.35", **common)
        else:
            fig.text(x, height - top - y_, text, fontsize=size, color=_ink(colour),
                     bbox=dict(boxstyle="square,pad=0.15", facecolor=colour, edgecolor="none"), **common)
    return _png(fig, plt)
