"""Cost of an input gradient: the compiled `gradient` explainer against the model's forward pass.

For each benchmark model (benchmarks/bench_models.py, exported to ONNX in a temporary folder):
  - compile time of `nnxplain.compile(path, ["gradient"])` (median of a few compiles),
  - median ONNX Runtime CPU run time at batch 8 of (a) the original model, forward only, and
    (b) the compiled explainer (forward + gradient), after warm-up, repeats interleaved (the order
    alternates each repeat so that drift and a busy neighbour hit both alike),
  - ratio explainer / forward, against the target of 2.3x (an input gradient costs about one more
    forward pass of FLOPs, plus elementwise masks).
Every run is checked: the explainer's logits must match the forward model's, and its gradient must
match torch autograd's input gradient of each sample's largest logit.

    python benchmarks/bench_gradient.py [--quick] [--json out.json] [--profile] [--floor]

--profile adds ONNX Runtime's per-op-type kernel time of the explainer and of the forward model,
split into forward, backward (the nodes nnxplain emitted) and layout (NCHWc reorders).

Exit status 1 means wrong results (logits differ from the model's, or the gradient from torch's);
a ratio over the target is reported, not failed.

Sessions run with intra-op spinning off (see make_session). The JSON also holds the median process
CPU time of each run and its ratio, which a neighbour's load disturbs less than wall time.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models  # noqa: E402  (benchmarks/bench_models.py)

import nnxplain  # noqa: E402
from nnxplain.bench import environment  # noqa: E402

TARGET_RATIO = 2.3
METHOD = "gradient"


def make_session(model: str | bytes, threads: int, profile_prefix: str | None = None) -> ort.InferenceSession:
    """A CPU session: the baseline and the explainer get the same options.

    Spinning is off: with it on, an idle session's pool threads keep spinning for a while after its
    run and steal the cores from the other session's run that follows (interleaved repeats). On 2
    cores that inflated the forward pass from ~87 to ~124 ms (VGG) and hid a third of the ratio;
    either session alone runs as fast with spinning off."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: ONNX Runtime's default (one per physical core)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def median_compile_time(path: Path, repeats: int) -> tuple[float, onnx.ModelProto]:
    times, model = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        model = nnxplain.compile(str(path), [METHOD])
        times.append(time.perf_counter() - start)
    return statistics.median(times), model


def torch_gradient(name: str, x: np.ndarray) -> np.ndarray:
    """The reference: d(largest logit of each sample)/d(input) by torch autograd."""
    module = bench_models.build(name)
    xt = torch.from_numpy(x).requires_grad_(True)
    logits = module(xt)
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    return xt.grad.numpy()


def floor_explainer(explainer: onnx.ModelProto) -> onnx.ModelProto:
    """The explainer with what is not a convolution taken out, for timing only (its gradient is wrong):
    each ReLU mask Where(Greater(y, 0), dy, 0) becomes dy, and each max-pool routing (MaxPool with
    Indices, ScatterElements, Reshape to the input's shape) becomes a nearest Resize of dy to that
    shape. What remains, the forward pass and the transposed convolutions, is what any formulation of
    the gradient in standard ONNX ops runs at least: its ratio is the floor of this explainer's."""
    import onnx_graphsurgeon as gs
    graph = gs.import_onnx(explainer)
    for node in graph.nodes:
        mask = node.inputs[0].inputs[0] if node.op == "Where" and node.inputs[0].inputs else None
        if mask is not None and mask.op == "Greater":
            node.op, node.inputs, node.attrs = "Identity", [node.inputs[1]], {}
        if node.op == "ScatterElements":
            dy = node.inputs[2].inputs[0].inputs[0]  # ScatterElements(zeros, indices, Reshape(dy, [-1]))
            reshape = node.outputs[0].outputs[0]
            empty = gs.Constant(f"{reshape.name}/empty", np.zeros(0, np.float32))
            reshape.op, reshape.attrs = "Resize", {"mode": "nearest"}
            reshape.inputs = [dy, empty, empty, reshape.inputs[1]]
    graph.cleanup().toposort()
    floor = gs.export_onnx(graph)
    floor.ir_version = explainer.ir_version
    return floor


def max_rel_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def compare_gradients(got: np.ndarray, want: np.ndarray) -> dict:
    """Per-sample agreement with the reference.

    Random-weight ReLU/max-pool networks have near-ties (two window values, or a pre-activation and
    zero, equal to float32 rounding); different summation orders can flip one, which moves the
    gradient of that sample by a few percent while every other sample agrees to 1e-6. So: how many
    samples agree to 1e-4 (relative to their largest entry), and the smallest cosine similarity.
    """
    errors, cosines = [], []
    for g, w in zip(got.reshape(len(got), -1).astype(np.float64), want.reshape(len(want), -1).astype(np.float64)):
        errors.append(float(np.max(np.abs(g - w)) / max(np.max(np.abs(w)), 1e-30)))
        cosines.append(float(g @ w / max(np.linalg.norm(g) * np.linalg.norm(w), 1e-300)))
    return {"max_rel_err": max(errors), "samples_within_1e-4": sum(e <= 1e-4 for e in errors),
            "samples": len(errors), "min_cosine": min(cosines), "per_sample_rel_err": errors}


def node_part(name: str, op: str) -> str:
    """Which part of the explainer a profiled node belongs to. nnxplain names its nodes nnx/...; ORT
    renames the last backward node after the graph output it now writes (`gradient...`), and its
    NCHWc layout pass adds Reorder* nodes wherever a tensor crosses between layouts."""
    if op.startswith("Reorder"):
        return "layout"
    if name.startswith(("nnx/", METHOD + "/", METHOD + "_")) or name == METHOD:
        return "backward"
    return "forward"


def profile_op_types(model_bytes: bytes, feed: dict, threads: int, runs: int, folder: str) -> dict:
    """Kernel ms per run summed per (op type, forward/backward part), largest first; the warm-up run is left out."""
    sess = make_session(model_bytes, threads, profile_prefix=os.path.join(folder, "profile"))
    sess.run(None, feed)  # warm-up, left out below
    for _ in range(runs):
        sess.run(None, feed)
    trace = sess.end_profiling()
    with open(trace) as f:
        events = json.load(f)
    os.unlink(trace)
    runs_seen = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    measured = runs_seen[-runs:] if len(runs_seen) >= runs else runs_seen
    first_ts = min(e["ts"] for e in measured)
    totals: dict[tuple[str, str], float] = collections.defaultdict(float)
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < first_ts:
            continue
        part = node_part(e["name"][:-len("_kernel_time")], e["args"].get("op_name", ""))
        totals[(e["args"].get("op_name", "?"), part)] += e["dur"] / 1e3 / runs
    total = sum(totals.values())
    rows = sorted(totals.items(), key=lambda kv: -kv[1])
    return {"total_ms": round(total, 2),
            "run_ms": round(statistics.median(e["dur"] / 1e3 for e in measured), 2),
            "ops": [{"op_type": op, "part": part, "ms": round(ms, 2), "share": round(ms / total, 4)}
                    for (op, part), ms in rows]}


def interleaved(sessions: dict, feed: dict, repeats: int, bar: tqdm | None = None) -> tuple[dict, dict]:
    """Wall and process CPU seconds of each session's runs, the order alternating each repeat (so that
    drift and a busy neighbour hit all alike). CPU time is less disturbed by a neighbour's load."""
    times = {which: [] for which in sessions}
    cpu = {which: [] for which in sessions}
    for r in range(repeats):
        for which in (list(sessions) if r % 2 == 0 else list(reversed(sessions))):
            cpu_start, start = time.process_time(), time.perf_counter()
            sessions[which].run(None, feed)
            times[which].append(time.perf_counter() - start)
            cpu[which].append(time.process_time() - cpu_start)
        if bar is not None:
            bar.update(1)
    return times, cpu


def bench_model(name: str, path: Path, args, bar: tqdm, folder: str) -> dict:
    compile_s, explainer = median_compile_time(path, args.compile_repeats)
    explainer_bytes = explainer.SerializeToString()
    forward = make_session(str(path), args.threads)
    explain = make_session(explainer_bytes, args.threads)
    x = np.random.default_rng(0).standard_normal((args.batch, *bench_models.INPUT_SHAPE)).astype(np.float32)
    feed = {"input": x}

    # correctness first: same logits, gradient as torch's
    (logits,) = forward.run(["logits"], feed)
    got_logits, gradient = explain.run(["logits", METHOD], feed)
    logits_err = max_rel_error(got_logits, logits)
    vs_torch = compare_gradients(gradient, torch_gradient(name, x))

    for _ in range(args.warmup):
        forward.run(None, feed)
        explain.run(None, feed)
    times, cpu = interleaved({"forward": forward, "explainer": explain}, feed, args.repeats, bar)
    forward_ms = statistics.median(times["forward"]) * 1e3
    explainer_ms = statistics.median(times["explainer"]) * 1e3
    ratio = explainer_ms / forward_ms
    result = {
        "model": name,
        "compile_s": round(compile_s, 4),
        "forward_ms": round(forward_ms, 2),
        "explainer_ms": round(explainer_ms, 2),
        "ratio": round(ratio, 3),
        "target": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        "logits_rel_err": logits_err,
        "gradient_vs_torch": vs_torch,
        "ratio_of_cpu_time": round(statistics.median(cpu["explainer"]) / statistics.median(cpu["forward"]), 3),
        "forward_cpu_ms": round(statistics.median(cpu["forward"]) * 1e3, 2),
        "explainer_cpu_ms": round(statistics.median(cpu["explainer"]) * 1e3, 2),
        "forward_runs_ms": [round(t * 1e3, 2) for t in times["forward"]],
        "explainer_runs_ms": [round(t * 1e3, 2) for t in times["explainer"]],
        "explainer_nodes": collections.Counter(n.op_type for n in explainer.graph.node).most_common(),
    }
    if args.floor:  # in a run of its own: a third session interleaved slows the other two
        floor = make_session(floor_explainer(explainer).SerializeToString(), args.threads)
        for _ in range(args.warmup):
            floor.run(None, feed)
        floor_times, _ = interleaved({"forward": forward, "floor": floor}, feed, args.repeats)
        result["floor_ms"] = round(statistics.median(floor_times["floor"]) * 1e3, 2)
        result["floor_ratio"] = round(statistics.median(floor_times["floor"]) / statistics.median(floor_times["forward"]), 3)
    if args.profile:
        bar.set_postfix_str(f"{name}: profiling")
        result["profile"] = {"explainer": profile_op_types(explainer_bytes, feed, args.threads, args.profile_runs, folder),
                             "forward": profile_op_types(path.read_bytes(), feed, args.threads, args.profile_runs, folder)}
    return result


def table(results: list[dict]) -> str:
    head = (f"{'model':<10} {'compile s':>9} {'forward ms':>11} {'explainer ms':>13} {'ratio':>7} {'target':>7}"
            f"       {'grad vs torch (samples to 1e-4, min cos)'}")
    lines = [head, "-" * len(head)]
    for r in results:
        t = r["gradient_vs_torch"]
        mark = "ok" if r["meets_target"] else "OVER"
        lines.append(f"{r['model']:<10} {r['compile_s']:>9.3f} {r['forward_ms']:>11.1f} {r['explainer_ms']:>13.1f} "
                     f"{r['ratio']:>6.2f}x {TARGET_RATIO:>5.1f}x {mark:<4}  "
                     f"{t['samples_within_1e-4']}/{t['samples']}, {t['min_cosine']:.5f}")
    for r in results:
        if "floor_ms" in r:
            lines.append(f"{r['model']}: floor (forward + transposed convolutions only, see floor_explainer) "
                         f"{r['floor_ms']:.1f} ms, {r['floor_ratio']:.2f}x the forward pass")
    return "\n".join(lines)


def profile_table(result: dict, top: int = 12) -> str:
    prof = result["profile"]["explainer"]
    lines = [f"{result['model']} explainer profile ({prof['run_ms']:.1f} ms/run, "
             f"forward model alone {result['profile']['forward']['run_ms']:.1f} ms/run):"]
    for row in prof["ops"][:top]:
        lines.append(f"  {row['op_type']:<18} {row['part']:<9} {row['ms']:>8.2f} ms {100 * row['share']:>5.1f}%")
    return "\n".join(lines)


def common_arguments(p: argparse.ArgumentParser, repeats: int, warmup: int):
    """The options every explainer-vs-forward benchmark takes; `settle(args)` fills in the defaults."""
    p.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, noisier numbers)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--models", nargs="+", choices=sorted(bench_models.MODELS), default=list(bench_models.MODELS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, help=f"timed runs of each session (default {repeats}, --quick 3)")
    p.add_argument("--warmup", type=int, help=f"untimed runs of each session first (default {warmup}, --quick 1)")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (default 0: ONNX Runtime's choice)")
    p.set_defaults(full_repeats=repeats, full_warmup=warmup)


def settle(args):
    args.repeats = args.repeats or (3 if args.quick else args.full_repeats)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else args.full_warmup)
    return args


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(p, repeats=15, warmup=3)
    p.add_argument("--profile", action="store_true", help="also profile the explainer per op type")
    p.add_argument("--profile-runs", type=int, default=3)
    p.add_argument("--floor", action="store_true",
                   help="also time the explainer without ReLU masks and max-pool routing (its floor; see floor_explainer)")
    args = settle(p.parse_args(argv))
    args.compile_repeats = 1 if args.quick else 3

    results = []
    with tempfile.TemporaryDirectory(prefix="nnxplain-bench-") as folder:
        with tqdm(total=len(args.models) * args.repeats, desc="bench", unit="rep", file=sys.stderr) as bar:
            for name in args.models:
                bar.set_postfix_str(f"{name}: export + compile")
                path = bench_models.export(name, Path(folder) / f"{name}.onnx")
                bar.set_postfix_str(name)
                results.append(bench_model(name, path, args, bar, folder))
    print(table(results))
    for r in results:
        if "profile" in r:
            print()
            print(profile_table(r))
    if args.json:
        report = {
            "benchmark": "gradient explainer vs forward, ONNX Runtime CPU",
            "batch": args.batch, "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads,
            "target_ratio": TARGET_RATIO,
            "env": {**environment(), "nnxplain_path": str(Path(nnxplain.__file__).parent)},
            "results": results,
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    bad = [r["model"] for r in results if r["logits_rel_err"] > 1e-4 or r["gradient_vs_torch"]["min_cosine"] < 0.999]
    if bad:
        print(f"wrong results from the explainer of: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
