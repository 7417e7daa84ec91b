"""Datasets: arrays and folders of images, read in batches, preprocessed to the model's input.

A dataset is a list of samples cut into batches of consecutive samples (`Dataset.batches`). A
batch is described by a small picklable `BatchRef` (its index and its rows, or its image files),
and `Dataset.read(ref)` reads just that batch: so memory is bounded by the batch whatever the
dataset's size, and every engine (the local loop or Ray's workers) sees exactly the same batches,
which is what makes their numbers equal (sampling noise and the float32 sums of pattern fitting are
per batch).

Sources (`open_dataset(spec)`):
- a `.npy` file (memory-mapped: only the batch is read), or a `.npz` with an array `x` (or only one
  array; an array `y`, if present, gives labels);
- a folder of images: PNG, JPEG, BMP, GIF, TIFF, WebP. A folder whose entries are all subfolders is
  an ImageFolder layout: each subfolder is a class (sorted by name, labels 0, 1, ...) and holds its
  images (searched recursively). Otherwise the folder's own images are the dataset, unlabelled;
- a glob pattern (`'photos/*.jpg'`) of image files, unlabelled.

Images are decoded with Pillow and preprocessed (`Preprocess`): converted to RGB (or grayscale),
resized, center-cropped, scaled, normalized by mean and std, put in the channel order and layout
the model takes. Without resize or crop every image must already have the model's input size.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field, replace

import numpy as np

from .errors import NnxplainError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
CHANNELS = ("rgb", "bgr", "gray")
LAYOUTS = ("nchw", "nhwc")


# ------------------------------------------------------------------------------------- preprocessing


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


@dataclass(frozen=True)
class Preprocess:
    """Image -> float32 array, in this order: convert to `channels` (rgb, bgr or gray; None: gray for
    a model with one input channel, else rgb), `resize` (an int: the shorter side to that many pixels,
    keeping the aspect ratio; or (height, width)), center `crop` (an int: a square; or (height,
    width)), multiply by `scale`, subtract `mean` and divide by `std` (per channel, in the order
    the channels end up in), then the `layout` nchw or nhwc. Resizing is bilinear, as torchvision's
    default; the crop offset rounds as torchvision's CenterCrop."""
    resize: int | tuple[int, int] | None = None
    crop: int | tuple[int, int] | None = None
    scale: float = 1 / 255
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: str | None = None
    layout: str = "nchw"

    def __post_init__(self):
        if self.channels is not None and self.channels not in CHANNELS:
            raise NnxplainError(f"channels must be one of {', '.join(CHANNELS)}, got '{self.channels}'")
        if self.layout not in LAYOUTS:
            raise NnxplainError(f"layout must be one of {', '.join(LAYOUTS)}, got '{self.layout}'")
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if value is not None and min(_pair(value)) < 1:
                raise NnxplainError(f"{name} must be a positive size, got {value}")
        if self.std is not None and any(s == 0 for s in self.std):
            raise NnxplainError("std must not contain 0")

    def fixes_size(self) -> bool:
        return self.crop is not None or (self.resize is not None and not isinstance(self.resize, int))

    def __call__(self, image, channels: str) -> np.ndarray:
        from PIL import Image
        image = image.convert("L" if channels == "gray" else "RGB")
        if self.resize is not None:
            w, h = image.size
            if isinstance(self.resize, int):
                short = self.resize
                size = (short, max(1, int(short * h / w))) if w <= h else (max(1, int(short * w / h)), short)
            else:
                size = (self.resize[1], self.resize[0])
            if size != image.size:
                image = image.resize(size, Image.BILINEAR)
        if self.crop is not None:
            ch, cw = _pair(self.crop)
            w, h = image.size
            if ch > h or cw > w:
                raise ValueError(f"is {w}x{h} pixels, smaller than the crop {cw}x{ch}")
            top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
            image = image.crop((left, top, left + cw, top + ch))
        x = np.asarray(image, np.float64)  # float64 arithmetic, rounded once to float32 at the end
        x = x[:, :, None] if x.ndim == 2 else x
        if channels == "bgr":
            x = x[:, :, ::-1]
        x = x * self.scale
        if self.mean is not None:
            x = x - np.asarray(self.mean, np.float64)
        if self.std is not None:
            x = x / np.asarray(self.std, np.float64)
        return np.ascontiguousarray(x.transpose(2, 0, 1) if self.layout == "nchw" else x, np.float32)


PRESETS = {
    # torchvision's ImageNet evaluation transform: Resize(256), CenterCrop(224), ToTensor, Normalize
    "imagenet": Preprocess(resize=256, crop=224, scale=1 / 255, mean=(0.485, 0.456, 0.406),
                           std=(0.229, 0.224, 0.225), channels="rgb", layout="nchw"),
    # Caffe-style models (VGG and ResNet as first released): BGR, 0..255 minus the mean pixel
    "caffe": Preprocess(resize=256, crop=224, scale=1.0, mean=(103.939, 116.779, 123.68), channels="bgr",
                        layout="nchw"),
    # pixels in [0, 1], nothing else (the default for images)
    "unit": Preprocess(),
}


def preprocess_from(preset: str | None = None, **options) -> Preprocess:
    """A preset (by name) with the given options (those not None) replacing its fields."""
    if preset is not None and preset not in PRESETS:
        raise NnxplainError(f"preprocess preset '{preset}' is unknown (choose from {', '.join(PRESETS)})")
    base = PRESETS[preset or "unit"]
    return replace(base, **{k: v for k, v in options.items() if v is not None})


def parse_size(text: str) -> int | tuple[int, int]:
    """'256' -> 256 (the shorter side, or a square crop); '224x192' -> (224, 192) (height x width)."""
    try:
        parts = [int(p) for p in str(text).lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return tuple(parts)
    raise NnxplainError(f"'{text}' is not a size: give N or HEIGHTxWIDTH")


def parse_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise NnxplainError(f"'{text}' is not a comma-separated list of numbers") from None


# ------------------------------------------------------------------------------------- datasets


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch `index` of a dataset, for whatever it draws at random (sampling noise, the
    random ordering of evaluate): `seed` itself for the first batch (so data in one batch gets what
    it got before batching), a seed derived from both for the others."""
    return int(seed) if index == 0 else int(np.random.SeedSequence([int(seed), index]).generate_state(1)[0])


@dataclass
class BatchRef:
    """One batch: its index in the dataset, its rows [start, stop), and for images its files and
    their labels (the ref carries them, so a worker needs no list of the whole dataset)."""
    index: int
    start: int
    stop: int
    files: list[str] | None = None
    labels: list[int] | None = None


@dataclass
class Batch:
    """A read batch: x [n, ...] float32 (bad images dropped when skipping), each sample's row number
    in the dataset, source (file path, or the row number as text) and label (-1: none), and the
    files skipped as (path, reason)."""
    index: int
    x: np.ndarray
    rows: np.ndarray
    sources: list[str]
    labels: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)


class Dataset:
    """Samples read batch by batch; see the module's docstring."""
    listing_skipped: list[tuple[str, str]] = []  # (path, reason) left out while listing, with skip_bad

    def __len__(self) -> int:
        raise NotImplementedError

    has_labels = False  # whether the samples have labels (an ImageFolder's classes, an .npz's y)

    def batches(self, batch_size: int) -> list[BatchRef]:
        if batch_size < 1:
            raise NnxplainError(f"batch_size must be at least 1, got {batch_size}")
        return [self._ref(i, start, min(start + batch_size, len(self)))
                for i, start in enumerate(range(0, len(self), batch_size))]

    def _ref(self, index, start, stop) -> BatchRef:
        return BatchRef(index, start, stop)

    def read(self, ref: BatchRef) -> Batch:
        raise NotImplementedError

    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one preprocessed sample (reads the first one)."""
        return self.read(self._ref(0, 0, 1)).x.shape[1:] if len(self) else ()

    def read_all(self) -> Batch:
        """Every sample in one batch (for small data: -o X.npy, --grid)."""
        return self.read(self._ref(0, 0, len(self)))


class ArrayDataset(Dataset):
    def __init__(self, path: str):
        self.path = os.fspath(path)
        self._open()

    def _open(self):
        from .runtime import load_array, load_arrays
        if self.path.endswith(".npy"):
            load_arrays(self.path, "a readable .npy/.npz file")  # the header against the file, before the map
            try:
                self.x = np.load(self.path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise NnxplainError(f"{self.path}: not a readable .npy/.npz file ({exc})") from None
            self.y = None
        else:
            self.x = load_array(self.path)
            self.y = None
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    if "y" in data and "x" in data and data["y"].ndim >= 1 and len(data["y"]) == len(self.x):
                        y = np.asarray(data["y"])
                        self.y = (y.reshape(len(y), -1) if y.size else np.zeros((len(y), 1)))[:, 0].astype(np.int64)
            except (OSError, ValueError, AttributeError):
                pass
        if self.x.ndim == 0:
            raise NnxplainError(f"{self.path}: the data must be a batch (samples first), got a scalar")
        self.has_labels = self.y is not None

    def __getstate__(self):  # a memory map is reopened where it is read, not copied
        return {"path": self.path} if self.path.endswith(".npy") else self.__dict__

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "x" not in state:
            self._open()

    def __len__(self):
        return len(self.x)

    def read(self, ref):
        x = np.asarray(self.x[ref.start:ref.stop])
        rows = np.arange(ref.start, ref.stop)
        labels = self.y[ref.start:ref.stop] if self.y is not None else np.full(len(rows), -1, np.int64)
        return Batch(ref.index, x, rows, [str(r) for r in rows], labels)


class ImageDataset(Dataset):
    def __init__(self, files: list[str], labels: list[int] | None, classes: list[str] | None,
                 preprocess: Preprocess, expect: tuple | None, skip_bad: bool, where: str):
        self.files, self.labels, self.classes = files, labels, classes
        self.has_labels = labels is not None
        self.preprocess, self.skip_bad, self.where = preprocess, skip_bad, where
        channels = preprocess.channels
        if channels is None:
            c = _channel_count(expect, preprocess.layout)
            channels = "gray" if c == 1 else "rgb"
        self.channels = channels
        self.expect = expect  # the model's input shape without the batch (None where a dim is dynamic)

    def __len__(self):
        return len(self.files)

    def _ref(self, index, start, stop):
        return BatchRef(index, start, stop, self.files[start:stop],
                        self.labels[start:stop] if self.labels is not None else None)

    def __getstate__(self):  # workers read the files their batch refs name
        return dict(self.__dict__, files=[], labels=None)

    def read(self, ref):
        from PIL import Image
        arrays, rows, sources, labels, skipped = [], [], [], [], []
        for i, (row, path) in enumerate(zip(range(ref.start, ref.stop), ref.files)):
            try:
                with Image.open(path) as image:
                    image.load()
                    x = self.preprocess(image, self.channels)
            except OSError as exc:  # Pillow's UnidentifiedImageError and truncated files are OSErrors
                reason = f"not a readable image ({_first_line(exc)})"
                x = None
            except ValueError as exc:
                reason, x = _first_line(exc), None
            if x is not None:
                reason = self._mismatch(x.shape)
            if reason is not None:
                if not self.skip_bad:
                    raise NnxplainError(f"{path}: {reason} (--skip-bad skips such files)")
                skipped.append((path, reason))
                continue
            arrays.append(x)
            rows.append(row)
            sources.append(path)
            labels.append(ref.labels[i] if ref.labels is not None else -1)
        shape = arrays[0].shape if arrays else self._empty_shape()
        x = np.stack(arrays) if arrays else np.zeros((0, *shape), np.float32)
        return Batch(ref.index, x, np.asarray(rows, np.int64), sources, np.asarray(labels, np.int64), skipped)

    def _empty_shape(self):
        return tuple(d if isinstance(d, int) else 1 for d in self.expect) if self.expect else (0,)

    def _mismatch(self, shape) -> str | None:
        if self.expect is None or (len(shape) == len(self.expect) and
                                   not all(isinstance(e, int) for e in self.expect)):
            # the model leaves (some) dims open: the first image sets them, for every batch alike
            # (open_dataset reads it on the driver, so every engine's workers get the same)
            self.expect = tuple(e if isinstance(e, int) else s for e, s in zip(self.expect or shape, shape))
            if self.expect != tuple(shape):
                return self._mismatch(shape)
            return None
        if len(shape) == len(self.expect) and all(not isinstance(e, int) or e == s for e, s in zip(self.expect, shape)):
            return None
        hint = ("" if self.preprocess.fixes_size() else
                "; give --preprocess imagenet, or --resize and --crop, to bring every image to that size")
        want = ["any" if not isinstance(e, int) else e for e in self.expect]
        return f"preprocessed to shape {list(shape)}, but the model takes {want}{hint}"


def _channel_count(expect, layout):
    if not expect or len(expect) != 3:
        return None
    c = expect[0] if layout == "nchw" else expect[-1]
    return c if isinstance(c, int) else None


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def open_dataset(spec: str | os.PathLike, preprocess: Preprocess | None = None, expect=None,
                 skip_bad: bool = False) -> Dataset:
    """The dataset at `spec`: a .npy / .npz file, a folder of images, or a glob of image files.
    `expect`: one sample's shape as the model takes it (dims not known: None or a name), used to
    choose gray or RGB and to check every image's size."""
    spec = os.fspath(spec)
    expect = tuple(expect) if expect is not None else None
    if spec.endswith((".npy", ".npz")):
        if preprocess is not None and preprocess != PRESETS["unit"]:
            raise NnxplainError(f"{spec}: preprocessing options apply to images, not to arrays")
        return ArrayDataset(spec)
    preprocess = preprocess or PRESETS["unit"]
    skipped = []
    if os.path.isdir(spec):
        files, labels, classes = _folder(spec, skip_bad, skipped)
    elif any(ch in spec for ch in "*?["):
        files = sorted(f for f in glob.glob(spec, recursive=True) if os.path.isfile(f))
        files, labels, classes = _only_images(files, spec, skip_bad, skipped), None, None
        if not files:
            raise NnxplainError(f"{spec}: the pattern matches no image files")
    elif os.path.isfile(spec):
        if is_image(spec):
            files, labels, classes = [spec], None, None
        else:
            raise NnxplainError(f"{spec}: give a .npy / .npz array, a folder of images or a glob of images")
    elif os.path.exists(spec):  # a FIFO would block, a device never ends
        raise NnxplainError(f"{spec}: not a readable .npy/.npz file (not a regular file)")
    else:
        raise NnxplainError(f"{spec}: no such file or folder")
    dataset = ImageDataset(files, labels, classes, preprocess, expect, skip_bad, spec)
    dataset.listing_skipped = skipped
    dataset.sample_shape()  # reads the first image: it fixes the dims the model leaves open
    return dataset


def _folder(folder: str, skip_bad: bool, skipped: list):
    entries = sorted(e for e in os.listdir(folder) if not e.startswith("."))
    subfolders = [e for e in entries if os.path.isdir(os.path.join(folder, e))]
    if entries and len(subfolders) == len(entries):  # ImageFolder: one subfolder per class
        files, labels = [], []
        for label, name in enumerate(subfolders):
            found = _only_images(_walk(os.path.join(folder, name)), folder, skip_bad, skipped)
            files += found
            labels += [label] * len(found)
        classes = subfolders
    else:
        files, labels, classes = _only_images([os.path.join(folder, e) for e in entries], folder, skip_bad,
                                                  skipped), None, None
    if not files:
        raise NnxplainError(f"{folder}: the folder holds no images (PNG, JPEG, BMP, GIF, TIFF, WebP)")
    return files, labels, classes


def _walk(folder):
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [os.path.join(root, n) for n in sorted(names) if not n.startswith(".")]
    return out


def _only_images(paths, where, skip_bad, skipped: list):
    """The image files among `paths`; anything else is an error naming it, or, with skip_bad,
    added to `skipped` as (path, reason)."""
    images, others = [], []
    for path in paths:
        if os.path.isdir(path):
            others.append(path + os.sep)
        elif is_image(path):
            images.append(path)
        else:
            others.append(path)
    if others and not skip_bad:
        more = f" (and {len(others) - 1} more)" if len(others) > 1 else ""
        raise NnxplainError(f"{others[0]}: not an image file{more} in {where}; remove it, or pass --skip-bad")
    skipped.extend((p, "not an image file") for p in others)
    return images
