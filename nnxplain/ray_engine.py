"""The Ray engine (`--engine ray`, `pip install 'nnxplain[ray]'`): the batches of a dataset spread
over an actor pool of Ray Data, on this machine or on a Ray cluster (`--ray-address`).

The driver cuts the dataset into the same batches as the local engine and groups them into blocks.
Ray Data streams the blocks through `map_batches` over an actor pool: each actor is made once with
the task (the models it runs compiled once on the driver and shipped as bytes), makes one ONNX
Runtime session, and for each block reads its batches (the files or array rows they name), runs
them, and adds their results (explanation parts written, float64 statistics, perturbation curves)
before sending the block's sum back; the driver adds the blocks' sums. Every actor asks Ray for
`threads` CPUs (and `gpus` GPUs: ONNX Runtime then takes the CUDA provider where it loads).

Files are read where the actors run: on a cluster of several machines the data, the model and the
output folder must be on storage every node sees under the same path.
"""
from __future__ import annotations

import pickle
import warnings

import numpy as np

from .engine import run_read
from .errors import NnxplainError


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise NnxplainError("--engine ray needs Ray: pip install 'nnxplain[ray]'") from None
    return ray


class RayEngine:
    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, threads: int | None = None,
                 gpus: float = 0.0):
        ray = _ray()
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise NnxplainError(f"could not connect to Ray at {address or 'a new local instance'}: "
                                    f"{str(exc).strip().splitlines()[0]}") from None
        self.threads = threads or 1
        self.gpus = gpus
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = workers or max(1, cpus // self.threads)
        if self.workers < 1:
            raise NnxplainError(f"--workers must be at least 1, got {self.workers}")

    def run(self, task, dataset, refs, progress: bool = False, desc: str = ""):
        """As LocalEngine.run: (total, skipped files); the blocks' results are added as they arrive."""
        ray = _ray()
        from tqdm import tqdm
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours counts images, with a rate and an ETA
        context.print_on_execution_start = False
        context.enable_auto_log_stats = False
        import logging
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # not its per-run notes on the user's terminal
        # about four blocks per worker: the work stays balanced, the results sent back stay few
        size = max(1, min(16, len(refs) // (4 * self.workers)))
        blocks = [refs[i:i + size] for i in range(0, len(refs), size)]
        items = ray.data.from_items([{"block": pickle.dumps(block)} for block in blocks],
                                    override_num_blocks=max(1, min(len(blocks), 4 * self.workers)))
        with warnings.catch_warnings():  # max_restarts is "deprecated" as a keyword, yet the way to set it
            warnings.simplefilter("ignore", DeprecationWarning)
            results = items.map_batches(_Actor, fn_constructor_args=(task, dataset), batch_size=1,
                                        compute=ray.data.ActorPoolStrategy(size=min(self.workers, len(blocks))),
                                        num_cpus=self.threads, num_gpus=self.gpus or None, batch_format="numpy",
                                        max_restarts=0)  # a failed actor is an error to report, not to retry
        total, skipped = None, list(dataset.listing_skipped)
        with tqdm(total=sum(r.stop - r.start for r in refs), desc=desc, unit="image", disable=not progress,
                  smoothing=0.1) as bar:
            try:
                for row in results.iter_rows():
                    result = pickle.loads(row["result"])
                    if isinstance(result, NnxplainError):
                        raise result
                    images, bad, partial = result
                    total = task.add(total, partial)
                    skipped += bad
                    bar.update(images)
            except NnxplainError:
                raise
            except Exception as exc:
                raise _cause(exc) from None
        return total, skipped


class _Actor:
    """One Ray actor: the task set up once (its ONNX Runtime session), then block after block."""

    def __init__(self, task, dataset):
        task.setup()
        self.task, self.dataset = task, dataset

    def __call__(self, batch: dict) -> dict:
        out = []
        for block in batch["block"]:
            total, skipped, images = None, [], 0
            try:
                for ref in pickle.loads(block):
                    batch = self.dataset.read(ref)
                    total = self.task.add(total, run_read(self.task, batch))
                    skipped += batch.skipped
                    images += ref.stop - ref.start
            except NnxplainError as exc:  # bad data: sent back as the block's result, for the driver to raise
                out.append(pickle.dumps(exc))
                continue
            out.append(pickle.dumps((images, skipped, total)))
        return {"result": np.array(out, dtype=object)}


def _cause(exc: BaseException) -> BaseException:
    """Our own error (bad data, say) from inside Ray's wrappers, so the user gets its one line."""
    seen = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, NnxplainError):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
        todo += [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]
    return exc
