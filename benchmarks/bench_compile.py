"""Compile time on a graph the size of ResNet-50 (full width: 53 convolutions, 53 BatchNorms, 16
residual adds, 25.6 M parameters, 224x224 input), weights stored as external data beside the .onnx.

    python benchmarks/bench_compile.py [--runs 3] [--method gradient --method lrp.epsilon ...]

Prints the time of nnxplain.compile (load with the external data, checks, canonicalization with
BatchNorm folding, the backward graph, the final check) per method set, best and median of the runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import nnxplain  # noqa: E402
from models.archs import ResNet50Style  # noqa: E402


def resnet50_onnx(folder: Path) -> Path:
    torch.manual_seed(0)
    net = ResNet50Style(64, (64, 128, 256, 512), (3, 4, 6, 3), 1000).eval()
    raw, out = folder / "raw.onnx", folder / "resnet50.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(1, 3, 224, 224),), str(raw), dynamo=False, opset_version=17,
                          do_constant_folding=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    model = onnx.load(str(raw))
    onnx.save(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True,
              location="resnet50.onnx.data", size_threshold=1024)
    ops = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    params = sum(p.numel() for p in net.parameters())
    print(f"ResNet-50: {len(model.graph.node)} nodes {dict(sorted(ops.items()))}, {params / 1e6:.1f} M parameters, "
          f"{(folder / 'resnet50.onnx.data').stat().st_size / 2**20:.0f} MiB external data, "
          f"{out.stat().st_size / 1024:.0f} KiB graph")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--method", action="append")
    args = parser.parse_args(argv)
    method_sets = [[m] for m in args.method] if args.method else [["gradient"], ["lrp.epsilon"], ["lrp.alpha_2_beta_1"],
                                                                  ["gradient", "guided_backprop", "lrp.epsilon"]]
    with tempfile.TemporaryDirectory() as tmp:
        path = resnet50_onnx(Path(tmp))
        for methods in method_sets:
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                model = nnxplain.compile(path, methods)
                times.append(time.perf_counter() - start)
            print(f"compile {'+'.join(methods):40s} best {min(times):.2f} s, median {statistics.median(times):.2f} s "
                  f"({len(model.graph.node)} nodes out)")


if __name__ == "__main__":
    main()
