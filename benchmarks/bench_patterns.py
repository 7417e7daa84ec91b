"""Cost of fitting patterns (PatternNet / PatternAttribution) against the model's forward pass.

For each benchmark model (benchmarks/bench_models.py, VGG-16 and ResNet-18 layouts at reduced width,
3x224x224) and each estimator (linear, relu), on ONNX Runtime CPU at batch 8, after warm-up, repeats
interleaved with the forward pass:
  - one fitting step: a run of the statistics graph (`nnxplain.patterns.statistics_model`: the
    forward pass plus every linear layer's sums) and the float64 accumulation of its outputs on the
    host, exactly what `nnxplain.patterns.fit` does per batch;
  - one forward run of the original model;
  - throughput ratio fit / forward = forward time / fitting-step time (target >= 1/3);
  - the pattern.attribution explainer's run time / forward time, for reference.

    python benchmarks/bench_patterns.py [--quick] [--json out.json]

Sessions are made as in bench_gradient.py (spinning off, same options for both).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models  # noqa: E402  (benchmarks/bench_models.py)
from bench_gradient import common_arguments, make_session, settle  # noqa: E402

import nnxplain  # noqa: E402
from nnxplain import patterns as P  # noqa: E402

TARGET = 1 / 3


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def bench(name: str, path: Path, args, bar) -> list[dict]:
    x = np.random.default_rng(0).standard_normal((args.batch, *bench_models.INPUT_SHAPE)).astype(np.float32)
    forward = make_session(str(path), args.threads)
    results = []
    for pattern_type in ("linear", "relu"):
        graph = P.canonical_graph(str(path))
        layers = P.linear_layers(graph)
        stats = make_session(P.statistics_model(graph, layers, pattern_type).SerializeToString(), args.threads)
        names = [o.name for o in stats.get_outputs()]
        totals: dict = {}

        def fit_step():
            for key, value in zip(names, stats.run(names, {"input": x})):
                totals[key] = totals.get(key, 0) + np.asarray(value, np.float64)

        patterns = P.fit(str(path), x, pattern_type, progress=False)  # the real entry point, once
        explainer = nnxplain.compile(str(path), ["pattern.attribution"], patterns=patterns)
        explain = make_session(explainer.SerializeToString(), args.threads)
        runs = {"forward": lambda: forward.run(None, {"input": x}), "fit": fit_step,
                "explainer": lambda: explain.run(None, {"input": x})}
        for _ in range(args.warmup):
            for run in runs.values():
                run()
        times = {k: [] for k in runs}
        for r in range(args.repeats):
            order = list(runs) if r % 2 == 0 else list(reversed(runs))
            for which in order:
                times[which].append(timed(runs[which]))
            bar.update(1)
        ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        finite = all(np.isfinite(a).all() for a in patterns.rows.values())
        results.append({"model": name, "pattern_type": pattern_type, "layers": len(layers),
                        "forward_ms": round(ms["forward"], 2), "fit_step_ms": round(ms["fit"], 2),
                        "throughput_ratio": round(ms["forward"] / ms["fit"], 3), "target": round(TARGET, 3),
                        "meets_target": ms["forward"] / ms["fit"] >= TARGET,
                        "pattern_attribution_ratio": round(ms["explainer"] / ms["forward"], 3),
                        "patterns_finite": finite})
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(p, repeats=11, warmup=2)
    args = settle(p.parse_args(argv))
    results = []
    with tempfile.TemporaryDirectory(prefix="nnxplain-bench-") as folder:
        with tqdm(total=len(args.models) * 2 * args.repeats, desc="bench", unit="rep", file=sys.stderr) as bar:
            for name in args.models:
                path = bench_models.export(name, Path(folder) / f"{name}.onnx")
                results.extend(bench(name, path, args, bar))
    head = (f"{'model':<10} {'estimator':<9} {'forward ms':>10} {'fit step ms':>11} {'fit/forward throughput':>23}"
            f" {'PA explainer/forward':>21}")
    print(head)
    print("-" * len(head))
    for r in results:
        mark = "ok" if r["meets_target"] else "UNDER"
        print(f"{r['model']:<10} {r['pattern_type']:<9} {r['forward_ms']:>10.1f} {r['fit_step_ms']:>11.1f} "
              f"{r['throughput_ratio']:>12.3f} (>= 0.333) {mark:<5} {r['pattern_attribution_ratio']:>8.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"batch": args.batch, "repeats": args.repeats, "results": results},
                                              indent=2) + "\n")
    return 0 if all(r["patterns_finite"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
