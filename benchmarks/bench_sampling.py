"""Sampling methods against the forward pass and against Captum, on the same weights, in one run.

Exports a benchmark model (benchmarks/bench_models.py) to ONNX in a temporary folder and runs
`nnxplain.bench.bench` on it with the torch module as the twin: compile time, explainer / forward,
peak memory, Captum's time for the same method (Captum / torch forward, and Captum / nnxplain).
The issue's figure: integrated_gradients with 32 steps, explainer / forward <= 70x, and at least
1.4x faster than Captum's IntegratedGradients with 32 steps (riemann_right).

    python benchmarks/bench_sampling.py [--model resnet18] [--batch 8] [--repeats 5] [--chunk 0] [--threads N]
                                        [--methods gradient,integrated_gradients] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models  # noqa: E402  (benchmarks/bench_models.py)

from nnxplain.bench import bench, table  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet18", choices=sorted(bench_models.MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=0)
    parser.add_argument("--methods", default="gradient,integrated_gradients")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for both ONNX Runtime and torch (default 0: each its own default). On a "
                             "machine shared with other jobs, torch's OpenMP threads can stall at their barriers "
                             "when a core is busy (forward times 30x apart between runs were seen on 2 shared "
                             "cores); --threads 1 measures both sides without that")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        path = bench_models.export(args.model, Path(folder) / f"{args.model}.onnx")
        net = bench_models.build(args.model).eval()
        result = bench(str(path), args.methods.split(","), batch=args.batch, repeats=args.repeats,
                       params={"steps": args.steps, "integrated_gradients.chunk": args.chunk}, twin=net,
                       threads=args.threads)
    print(f"{args.model}, onnxruntime {ort.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{platform.processor() or platform.machine()}")
    print(table(result))
    for row in result["rows"]:
        if row["method"] == "integrated_gradients":
            print(f"IG-{args.steps}: {row['ratio']:.1f}x forward (target <= 70x); Captum IG-{args.steps} "
                  f"{row.get('captum_ratio', float('nan')):.1f}x torch forward; nnxplain "
                  f"{row.get('captum_vs_nnxplain', float('nan')):.2f}x faster than Captum (target >= 1.4x)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
