"""Dataset throughput: `analyze` (gradient, lrp.epsilon) and pattern fitting from a folder of JPEG
images, on the local engine and on the Ray engine with 1 and 2 workers, at equal cores.

The model is the ResNet-18 layout of bench_models.py (widths 16-32-64-128, 3x224x224, 1000 logits).
The images are generated: `--images` JPEGs of 256x256 (smooth random colour fields, quality 90) in an
ImageFolder of 4 classes, read with `--preprocess imagenet` (resize 256, center crop 224, normalize).
Every run is end to end, as `nnxplain analyze MODEL --input DIR --preprocess imagenet -o OUT` does
it: list the folder, decode and preprocess each image, run the explainer, write the shards (float32
.npy + .csv per batch) — or, for fit, run the statistics graph and add the float64 sums.

Configurations (the same total cores for each pair):
  local-1   the local engine, ONNX Runtime with 1 thread
  ray-1     the Ray engine, 1 actor with 1 thread
  local-2   the local engine, ONNX Runtime with 2 threads
  ray-2     the Ray engine, 2 actors with 1 thread each
Ray is started once (`ray.init`) before the timings, as a cluster would be; each Ray run includes
starting its actors and compiling nothing (the explainer is compiled once on the driver, as in
the CLI). A warm-up run of each engine comes first. The Ray engine's explanations and patterns are
checked against the local engine's.

    python benchmarks/bench_datasets.py [--images 512] [--batch 32] [--repeats 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bench_models  # noqa: E402

import nnxplain  # noqa: E402
from nnxplain import engine as E  # noqa: E402
from nnxplain.bench import median_time  # noqa: E402
from nnxplain.data import PRESETS, open_dataset  # noqa: E402

CONFIGS = [("local", 1, None), ("ray", 1, 1), ("local", 2, None), ("ray", 1, 2)]  # (engine, threads, workers)


def make_images(folder: Path, count: int, classes: int = 4, side: int = 256):
    """Smooth random colour fields (JPEG compresses them as it does photos, unlike white noise)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for i in range(count):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((side, side), Image.BICUBIC)
        target = folder / f"class{i % classes}"
        target.mkdir(parents=True, exist_ok=True)
        image.save(target / f"{i:06d}.jpg", quality=90)


def config_name(engine, threads, workers):
    return f"{engine}-{threads if engine == 'local' else workers}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per configuration (the median is kept)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    import ray
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    work = Path(tempfile.mkdtemp(prefix="nnxplain-bench-datasets-"))
    model = bench_models.export("resnet18", work / "resnet18.onnx")
    folder = work / "images"
    make_images(folder, args.images)
    dataset = open_dataset(folder, PRESETS["imagenet"], expect=(3, 224, 224))
    engines = {config_name(*c): E.engine(c[0], workers=c[2], threads=c[1]) for c in CONFIGS}
    results = {"images": args.images, "batch": args.batch, "cpus": os.cpu_count(), "analyze": {}, "fit": {}}

    for method in ("gradient", "lrp.epsilon"):
        explainer = nnxplain.compile(str(model), [method])
        runs = {}
        for name, engine in engines.items():
            out = work / f"out-{method}-{name}"

            def run():
                return E.analyze(str(model), method, dataset, str(out), args.batch, engine, explainer=explainer)

            run()  # warm-up (and Ray's actor start-up code paths)
            runs[name] = median_time(run, args.repeats)
            print(f"analyze {method:<12} {name:<8} {args.images / runs[name]:7.1f} images/s", flush=True)
        reference = nnxplain.read_explanations(work / f"out-{method}-local-2").values
        for name in engines:
            error = relative_error(nnxplain.read_explanations(work / f"out-{method}-{name}").values, reference)
            assert error < 1e-5, f"{method} {name}: relative error {error:.1e} against local-2"
        results["analyze"][method] = {name: args.images / t for name, t in runs.items()}

    runs, fitted = {}, {}
    for name, engine in engines.items():
        def run():
            fitted[name] = E.fit(str(model), dataset, "relu", args.batch, engine)[0]

        run()
        runs[name] = median_time(run, args.repeats)
        print(f"fit relu             {name:<8} {args.images / runs[name]:7.1f} images/s", flush=True)
    for name in engines:
        for key, rows in fitted["local-2"].rows.items():
            error = relative_error(fitted[name].rows[key], rows)
            assert error < 1e-9, f"fit {name}: layer {key} relative error {error:.1e}"
    results["fit"]["relu"] = {name: args.images / t for name, t in runs.items()}
    ray.shutdown()

    print()
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def relative_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def table(results) -> str:
    names = [config_name(*c) for c in CONFIGS]
    lines = ["| task | " + " | ".join(f"{n} img/s" for n in names) + " | ray-1/local-1 | ray-2/local-2 | "
             "ms/image (best) | 50k images | 1.2M images |",
             "|---|" + "---|" * (len(names) + 5)]
    rows = [(f"analyze {m}", r) for m, r in results["analyze"].items()] + [("fit relu", results["fit"]["relu"])]
    for label, rates in rows:
        best = max(rates.values())
        lines.append(f"| {label} | " + " | ".join(f"{rates[n]:.1f}" for n in names)
                     + f" | {rates['ray-1'] / rates['local-1']:.2f}x | {rates['ray-2'] / rates['local-2']:.2f}x"
                     + f" | {1000 / best:.1f} | {50_000 / best / 60:.0f} min | {1_200_000 / best / 3600:.1f} h |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
