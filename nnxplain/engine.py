"""Running `analyze`, `fit` and `evaluate` over a dataset, batch by batch, on an engine.

A command is a *task*: `setup()` where it runs (ONNX Runtime sessions are made there, from models
compiled once on the driver), `run(batch)` per batch (a `nnxplain.data.Batch`) giving a partial
result, and `add(total, partial)` that sums partial results in any grouping. An engine reads the
dataset's batches, runs the task and adds the results up:

- `LocalEngine` (the default): one process, batches one after the other, ONNX Runtime's own
  threads, the next batch read while one runs; memory is bounded by two batches.
- `nnxplain.ray_engine.RayEngine` (`--engine ray`): the batches are spread over an actor pool of
  Ray Data; each actor holds one session and adds the results of the batches it is given before
  sending them back.

Both engines cut the dataset into the same batches, and everything random is seeded per batch
(`nnxplain.data.batch_seed`), so they give the same numbers.

`analyze` writes its explanations to a folder of shards (`write_explanations` layout below) that
`read_explanations` reads back.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass

import numpy as np

from .compiler import NEURON_INPUT
from .errors import NnxplainError

FORMAT = "nnxplain-explanations-1"
INDEX = "index.json"


# ------------------------------------------------------------------------------------- engines


class LocalEngine:
    """Batches one after the other in this process; `threads`: ONNX Runtime's (0: one per core)."""
    name = "local"

    def __init__(self, threads: int | None = None):
        self.threads = threads or 0

    def run(self, task, dataset, refs, progress: bool = False, desc: str = ""):
        """(total of the task's partial results, skipped files [(path, reason)]). The next batch is
        read in a thread while this one runs (decoding images overlaps the explainer): memory holds
        two batches."""
        from concurrent.futures import ThreadPoolExecutor

        from tqdm import tqdm
        task.setup()
        total, skipped = None, list(dataset.listing_skipped)
        with tqdm(total=sum(r.stop - r.start for r in refs), desc=desc, unit="image", disable=not progress,
                  smoothing=0.1) as bar, ThreadPoolExecutor(1) as reader:
            upcoming = reader.submit(dataset.read, refs[0]) if refs else None
            for i, ref in enumerate(refs):
                batch = upcoming.result()
                upcoming = reader.submit(dataset.read, refs[i + 1]) if i + 1 < len(refs) else None
                total = task.add(total, run_read(task, batch))
                skipped += batch.skipped
                bar.update(ref.stop - ref.start)
        return total, skipped


def run_read(task, batch):
    """The task's partial result of a read batch (None if every file in it was bad)."""
    return task.run(batch) if len(batch.x) else None


def engine(name: str = "local", address: str | None = None, workers: int | None = None, threads: int | None = None,
           gpus: float = 0.0):
    """The engine called `name`: local, or ray (Ray is imported only then)."""
    if name == "local":
        return LocalEngine(threads)
    if name == "ray":
        from .ray_engine import RayEngine
        return RayEngine(address=address, workers=workers, threads=threads, gpus=gpus)
    raise NnxplainError(f"engine must be local or ray, got '{name}'")


# ------------------------------------------------------------------------------------- analyze


class ExplainTask:
    """Explain each batch with a compiled explainer and write it as one part of the output folder.

    `model`: the explainer's bytes (compiled once on the driver); `output`: the explanation's output
    name; `scores`: the model output whose argmax and maximum are recorded per input; `seeds`:
    {method: seed} of the noise inputs; `neurons`: with index selection, one index for every input
    (an int), one per row (an array over the dataset), or "labels" (the dataset's labels)."""

    def __init__(self, model: bytes, output: str, scores: str, folder: str, seeds: dict | None = None,
                 neurons=None, dtype: str = "float32", pictures: str | None = None, reduce: str = "sum",
                 threads: int = 0):
        self.model, self.output, self.scores, self.folder = model, output, scores, folder
        self.seeds, self.neurons, self.dtype = seeds or {}, neurons, np.dtype(dtype)
        self.pictures, self.reduce, self.threads = pictures, reduce, threads
        self.session = None

    def __getstate__(self):
        return dict(self.__dict__, session=None)

    def setup(self):
        if self.session is None:
            from .runtime import session
            self.session = session(self.model, threads=self.threads)

    def explain(self, batch):
        """(explanation [n, ...], scores [n, outputs]) of one batch."""
        from .data import batch_seed
        from .runtime import check_feed
        from .sampling import NOISE_SUFFIX, noise_feeds
        inputs = [m for m in self.session.get_inputs() if m.name != NEURON_INPUT and not m.name.endswith(NOISE_SUFFIX)]
        if len(inputs) != 1:
            raise NnxplainError(f"the model has {len(inputs)} inputs; analyze takes models with one")
        x = check_feed(inputs[0], batch.x, "input")
        feeds = {inputs[0].name: x}
        feeds.update(noise_feeds(self.session, x, {m: batch_seed(s, batch.index) for m, s in self.seeds.items()}))
        if any(m.name == NEURON_INPUT for m in self.session.get_inputs()):
            feeds[NEURON_INPUT] = self._neurons(batch)
        scores, relevance = self.session.run([self.scores, self.output], feeds)
        return relevance, scores.reshape(len(x), -1)

    def _neurons(self, batch):
        if isinstance(self.neurons, str):  # "labels"
            if (batch.labels < 0).any():
                raise NnxplainError(f"{batch.sources[int(np.argmin(batch.labels))]}: has no label to explain "
                                    f"(--neuron-selection index without --neuron takes the labels of an "
                                    f"ImageFolder, or the array 'y' of an .npz)")
            return batch.labels.astype(np.int64)
        if np.ndim(self.neurons) == 0:
            return np.full(len(batch.rows), int(self.neurons), np.int64)
        return np.asarray(self.neurons, np.int64)[batch.rows]

    def run(self, batch):
        relevance, scores = self.explain(batch)
        name = f"part-{batch.index:06d}"
        np.save(os.path.join(self.folder, name + ".npy"), relevance.astype(self.dtype, copy=False))
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["row", "source", "label", "predicted", "score"])
        predicted = scores.argmax(1)
        for i, row in enumerate(batch.rows):
            writer.writerow([int(row), batch.sources[i], int(batch.labels[i]), int(predicted[i]),
                             repr(float(scores[i, predicted[i]]))])
        with open(os.path.join(self.folder, name + ".csv"), "w", newline="") as f:
            f.write(text.getvalue())
        if self.pictures:
            self._draw(batch, relevance)
        return [{"name": name, "batch": batch.index, "rows": len(batch.rows)}]

    def _draw(self, batch, relevance):
        from . import visualize as vis
        folder = os.path.join(self.folder, "pictures")
        os.makedirs(folder, exist_ok=True)
        for row, r, x in zip(batch.rows, relevance, batch.x):
            picture = vis.picture(self.pictures, r, x, self.reduce, float(x.min()), float(x.max()))
            png = vis.image_png([picture], scale=max(1, 128 // max(picture.shape[:2])))
            with open(os.path.join(folder, f"{int(row):08d}.png"), "wb") as f:
                f.write(png)

    @staticmethod
    def add(total, partial):
        return (total or []) + (partial or [])


def analyze(model, method: str, dataset, out: str, batch_size: int = 256, engine=None,
            neuron_selection: str = "max_activation", neurons=None, params: dict | None = None, patterns=None,
            float16: bool = False, pictures: str | None = None, reduce: str = "sum", progress: bool = False,
            explainer=None, output: str | None = None) -> dict:
    """Explain every input of `dataset` (`nnxplain.data.open_dataset`) with `method` into the folder
    `out`, batch by batch on `engine` (default local); returns the folder's index. `neurons`, with
    neuron_selection "index": an int for every input, one per input, or "labels" (the dataset's);
    `pictures`: draw each explanation as this kind of picture (heatmap, graymap, project, overlay);
    `explainer`: the compiled explainer where it is compiled already (else it is compiled here);
    `output`: the model output explained, whose scores are recorded (default: the first)."""
    from .compiler import compile, resolve_methods
    engine = engine or LocalEngine()
    resolved = resolve_methods([method], params or {})[0]
    if explainer is None:
        explainer = compile(model, [resolved], neuron_selection=neuron_selection, patterns=patterns, output=output)
    if neuron_selection == "index" and neurons is None:
        raise NnxplainError("neuron selection 'index' needs neurons: an index, one per input, or 'labels'")
    if isinstance(neurons, str) and not dataset.has_labels:
        raise NnxplainError(f"{dataset_name(dataset)}: the data has no labels to explain (an ImageFolder, or an "
                            f".npz with an array 'y', has them)")
    if neurons is not None and np.ndim(neurons) == 1 and len(neurons) != len(dataset):
        raise NnxplainError(f"{len(neurons)} neurons given for {len(dataset)} inputs")
    dtype = "float16" if float16 else "float32"
    task = ExplainTask(explainer.SerializeToString(), explainer.graph.output[-1].name,
                       output or explainer.graph.output[0].name, folder=None, seeds={resolved.name: resolved.params.get("seed", 0)},
                       neurons=neurons, dtype=dtype, pictures=pictures, reduce=reduce, threads=engine.threads)
    meta = {"method": resolved.name, "dtype": dtype, "shape": list(dataset.sample_shape()),
            "source": dataset_name(dataset), "batch_size": batch_size, "engine": engine.name}
    return write_explanations(engine, task, dataset, dataset.batches(batch_size), out, meta, progress=progress)


def write_explanations(engine, task: ExplainTask, dataset, refs, out: str, meta: dict, progress: bool = False):
    """Run `task` over the dataset into the folder `out`, all or nothing: the parts are written to a
    temporary folder beside it, which replaces `out` only once every batch is done (an `out` that
    exists must be an explanations folder itself, and is left as it was on failure).

    The folder: `part-NNNNNN.npy` (the explanations of batch N, [rows, *input shape], float32 or
    float16), `part-NNNNNN.csv` (per row: row number in the dataset, source file or row, label or
    -1, predicted class, its score), `pictures/RRRRRRRR.png` (one heatmap per input, by row number,
    with --pictures), and `index.json`, written last: format, method, dtype, sample shape, count,
    the parts in batch order and the skipped files."""
    out = os.path.abspath(out)
    _check_out(out)
    tmp = tempfile.mkdtemp(prefix=".nnxplain-", dir=os.path.dirname(out))
    task.folder = tmp
    try:
        parts, skipped = engine.run(task, dataset, refs, progress=progress, desc="explaining")
        parts = sorted(parts or [], key=lambda p: p["batch"])
        count = sum(p["rows"] for p in parts)
        if count == 0:
            raise NnxplainError(f"{dataset_name(dataset)}: no input could be read ({len(skipped)} skipped)")
        index = dict(meta, format=FORMAT, count=count, parts=parts,
                     skipped=[{"source": s, "reason": r} for s, r in skipped])
        with open(os.path.join(tmp, INDEX), "w") as f:
            json.dump(index, f, indent=1)
        os.chmod(tmp, 0o777 & ~_umask())
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return index


def dataset_name(dataset) -> str:
    return getattr(dataset, "where", None) or getattr(dataset, "path", "data")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_out(out):
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise NnxplainError(f"{out}: the folder {parent} does not exist")
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise NnxplainError(f"{out}: exists and is not a folder; -o takes a folder (or a .npy / .png file)")
        if os.listdir(out) and not os.path.isfile(os.path.join(out, INDEX)):
            raise NnxplainError(f"{out}: the folder holds other files; give a new or empty folder, or an "
                                f"explanations folder to replace")


def _replace_folder(new, out):
    old = None
    if os.path.exists(out):
        old = tempfile.mkdtemp(prefix=".nnxplain-old-", dir=os.path.dirname(out))
        os.rmdir(old)
        os.rename(out, old)
    os.rename(new, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


@dataclass
class Explanations:
    """What `read_explanations` returns: the explanations [count, *sample shape] in dataset order,
    and per row its row number, source (file path, or the row number for arrays), label (-1: none),
    predicted class and score; `meta`: the index (method, dtype, skipped files, ...)."""
    values: np.ndarray
    rows: np.ndarray
    sources: list[str]
    labels: np.ndarray
    predicted: np.ndarray
    scores: np.ndarray
    meta: dict

    @property
    def method(self) -> str:
        return self.meta["method"]

    def __len__(self):
        return len(self.rows)


def read_explanations(folder: str | os.PathLike, mmap: bool = False) -> Explanations:
    """The explanations written by `nnxplain analyze ... -o FOLDER` (any engine). mmap: memory-map
    the parts and return them one part at a time as `values` (a list of arrays) rather than one
    concatenated array, for outputs larger than memory."""
    folder = os.fspath(folder)
    try:
        with open(os.path.join(folder, INDEX)) as f:
            meta = json.load(f)
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        values, rows, sources, labels, predicted, scores = [], [], [], [], [], []
        for part in meta["parts"]:
            path = os.path.join(folder, part["name"])
            values.append(np.load(path + ".npy", mmap_mode="r" if mmap else None, allow_pickle=False))
            with open(path + ".csv", newline="") as f:
                for record in csv.DictReader(f):
                    rows.append(int(record["row"]))
                    sources.append(record["source"])
                    labels.append(int(record["label"]))
                    predicted.append(int(record["predicted"]))
                    scores.append(float(record["score"]))
    except (OSError, ValueError, KeyError) as exc:
        raise NnxplainError(f"{folder}: not an explanations folder written by `nnxplain analyze -o` ({exc})") from None
    if not mmap:
        values = np.concatenate(values) if values else np.zeros((0, *meta.get("shape", [])), meta.get("dtype"))
    return Explanations(values, np.asarray(rows, np.int64), sources, np.asarray(labels, np.int64),
                        np.asarray(predicted, np.int64), np.asarray(scores, np.float64), meta)


# ------------------------------------------------------------------------------------- fit, evaluate


class FitTask:
    """Each batch's float64 sufficient statistics (`nnxplain.patterns.Statistics`), added up. Made on
    the driver with its Statistics (used as it is by the local engine); a worker gets the model and
    the statistics graph's bytes, and makes its own session from them."""

    def __init__(self, statistics, model):
        self.statistics, self.model = statistics, model

    def __getstate__(self):
        s = self.statistics
        return {"statistics": None, "model": self.model, "pattern_type": s.pattern_type, "graph_bytes": s.graph_bytes,
                "threads": s.threads}

    def setup(self):
        if self.statistics is None:
            from .patterns import Statistics
            self.statistics = Statistics(self.model, self.pattern_type, self.graph_bytes, self.threads)

    def run(self, batch):
        return self.statistics.sums(batch.x)

    @staticmethod
    def add(total, partial):
        from .patterns import Statistics
        return Statistics.add(total, partial)


def fit(model, dataset, pattern_type: str = "relu", batch_size: int = 256, engine=None, progress: bool = False):
    """Patterns fitted on a dataset (`nnxplain.data`), batch by batch on `engine` (default local):
    (the Patterns, the skipped files)."""
    import onnx

    from .load import load
    from .patterns import Statistics
    engine = engine or LocalEngine()
    proto = model if isinstance(model, onnx.ModelProto) else load(model)
    statistics = Statistics(proto, pattern_type, threads=engine.threads)  # the statistics graph, built once
    if statistics.fixed_batch is not None:
        batch_size = statistics.fixed_batch
    totals, skipped = engine.run(FitTask(statistics, proto), dataset, dataset.batches(batch_size), progress=progress,
                                 desc="fitting patterns")
    return statistics.patterns(totals), skipped


class EvaluateTask:
    """Each batch's perturbation curves summed over its images (`nnxplain.evaluate.Evaluation`)."""

    def __init__(self, evaluation):
        self.evaluation = evaluation

    def setup(self):
        self.evaluation.setup()

    def run(self, batch):
        return self.evaluation.sums(batch.x, batch.index)

    def add(self, total, partial):
        return self.evaluation.add(total, partial)


def evaluate(model, methods, dataset, batch_size: int = 256, engine=None, progress: bool = False, **options):
    """The perturbation analysis (`nnxplain.evaluate.evaluate`) over a dataset, batch by batch."""
    from .evaluate import Evaluation
    shape = dataset.sample_shape()
    evaluation = Evaluation(model, methods, (len(dataset), *shape), **options)
    engine = engine or LocalEngine()
    evaluation.threads = engine.threads
    totals, skipped = engine.run(EvaluateTask(evaluation), dataset, dataset.batches(batch_size),
                                                    progress=progress, desc="perturbation analysis")
    return evaluation.result(totals), skipped
