"""Cost of LRP: the compiled `lrp.epsilon` and `lrp.alpha_2_beta_1` explainers against the model's
forward pass, and Captum's LRP (torch, CPU) on the same weights, all timed in the same run.

For each benchmark model (benchmarks/bench_models.py: VGG-16 and ResNet-18 layouts at 224x224, exported to
ONNX in a temporary folder), at batch 8:
  - compile time of each method (median of a few compiles),
  - median ONNX Runtime CPU run time of the forward model and of each explainer (forward + LRP),
    repeats interleaved with the order rotating each repeat, sessions with intra-op spinning off
    (see bench_gradient.make_session),
  - median time of Captum's LRP (EpsilonRule; the comparison library, since zennit does not install
    beside torch 2.13.0 on Python 3.11.7: zennit 1.0 needs Python >= 3.11.11, and zennit 0.5.1
    imports torchvision, whose wheels for this torch fail to load) and of the torch forward pass,
  - ratios explainer / forward against the targets (lrp.epsilon 2.5x, lrp.alpha_2_beta_1 6x).
Checks: the explainers' logits equal the forward model's; lrp.epsilon agrees with Captum's LRP on
VGG (per-sample cosine; Captum's residual `+` is no module, so on ResNet it is timed, not compared);
relevance is finite.

    python benchmarks/bench_lrp.py [--quick] [--json out.json] [--profile] [--no-captum]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models  # noqa: E402  (benchmarks/bench_models.py)
from bench_gradient import common_arguments, make_session, profile_op_types, settle  # noqa: E402

import nnxplain  # noqa: E402
from nnxplain.bench import environment  # noqa: E402

TARGETS = {"lrp.epsilon": 2.5, "lrp.alpha_2_beta_1": 6.0}


def compile_method(path: Path, method: str, repeats: int) -> tuple[float, bytes]:
    times, model = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        model = nnxplain.compile(str(path), [method])
        times.append(time.perf_counter() - start)
    return statistics.median(times), model.SerializeToString()


def captum_lrp(name: str):
    """Captum's LRP on the torch model (EpsilonRule on every layer with weights or pooling; ReLU and
    Dropout pass, Captum's default). Returns (module, attribute(x, target))."""
    from captum.attr import LRP
    from captum.attr._utils.lrp_rules import EpsilonRule

    net = bench_models.build(name)
    leaves = [m for m in net.modules() if next(m.children(), None) is None
              and not isinstance(m, (torch.nn.ReLU, torch.nn.Dropout))]

    def attribute(x: torch.Tensor, target: torch.Tensor) -> np.ndarray:
        for module in leaves:  # Captum removes the rules after each attribution: set them every time
            module.rule = EpsilonRule(epsilon=1e-7)  # Flatten, empty shortcuts and the rest: the z-rule
        return LRP(net).attribute(x, target=target).detach().numpy()

    return net, attribute


def cosines(got: np.ndarray, want: np.ndarray) -> list[float]:
    out = []
    for g, w in zip(got.reshape(len(got), -1).astype(np.float64), want.reshape(len(want), -1).astype(np.float64)):
        out.append(float(g @ w / max(np.linalg.norm(g) * np.linalg.norm(w), 1e-300)))
    return out


def bench_model(name: str, path: Path, args, bar: tqdm, folder: str) -> dict:
    x = np.random.default_rng(0).standard_normal((args.batch, *bench_models.INPUT_SHAPE)).astype(np.float32)
    feed = {"input": x}
    runs = {"forward": lambda: sessions["forward"].run(None, feed)}
    sessions = {"forward": make_session(str(path), args.threads)}
    result = {"model": name, "methods": {}}
    (logits,) = sessions["forward"].run(["logits"], feed)
    explanations = {}
    for method in args.methods:
        compile_s, model_bytes = compile_method(path, method, args.compile_repeats)
        sessions[method] = make_session(model_bytes, args.threads)
        got_logits, relevance = sessions[method].run(["logits", method], feed)
        explanations[method] = relevance
        result["methods"][method] = {
            "compile_s": round(compile_s, 3),
            "logits_rel_err": float(np.abs(got_logits - logits).max() / np.abs(logits).max()),
            "finite": bool(np.isfinite(relevance).all()),
            "relevance_sum_over_output": [float(s) for s in relevance.reshape(len(x), -1).sum(1) / logits.max(1)],
        }
        runs[method] = (lambda m: lambda: sessions[m].run(None, feed))(method)
        if args.profile:
            result["methods"][method]["profile"] = profile_op_types(model_bytes, feed, args.threads,
                                                                    args.profile_runs, folder)
    if not args.no_captum:
        torch.set_num_threads(args.torch_threads or os.cpu_count())
        net, attribute = captum_lrp(name)
        xt = torch.from_numpy(x)
        with torch.no_grad():
            target = net(xt).argmax(1)
        want = attribute(xt.clone(), target)
        if "lrp.epsilon" in explanations:
            result["epsilon_vs_captum_min_cosine"] = min(cosines(explanations["lrp.epsilon"], want))
        runs["captum_lrp"] = lambda: attribute(xt.clone(), target)

        def torch_forward():
            with torch.no_grad():
                net(xt)
        runs["torch_forward"] = torch_forward

    for _ in range(args.warmup):
        for run in runs.values():
            run()
    times = {k: [] for k in runs}
    order = list(runs)
    for r in range(args.repeats):
        for which in order[r % len(order):] + order[:r % len(order)]:
            start = time.perf_counter()
            runs[which]()
            times[which].append(time.perf_counter() - start)
        bar.update(1)
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    result["forward_ms"] = round(ms["forward"], 2)
    for method in args.methods:
        result["methods"][method].update(explainer_ms=round(ms[method], 2), ratio=round(ms[method] / ms["forward"], 3),
                                         target=TARGETS.get(method))
    if "captum_lrp" in ms:
        result.update(captum_lrp_ms=round(ms["captum_lrp"], 2), torch_forward_ms=round(ms["torch_forward"], 2),
                      captum_ratio=round(ms["captum_lrp"] / ms["torch_forward"], 3))
    return result


def table(results: list[dict]) -> str:
    lines = [f"{'model':<10} {'method':<20} {'compile s':>9} {'forward ms':>11} {'explainer ms':>13} {'ratio':>7} "
             f"{'target':>7}"]
    for r in results:
        for method, m in r["methods"].items():
            target = m.get("target")
            verdict = "" if target is None else ("met" if m["ratio"] <= target else "NOT met")
            lines.append(f"{r['model']:<10} {method:<20} {m['compile_s']:>9.2f} {r['forward_ms']:>11.1f} "
                         f"{m['explainer_ms']:>13.1f} {m['ratio']:>6.2f}x {target or '':>6}x {verdict}")
        if "captum_lrp_ms" in r:
            cos = r.get("epsilon_vs_captum_min_cosine")
            lines.append(f"{r['model']:<10} {'Captum LRP (torch)':<20} {'':>9} {r['torch_forward_ms']:>11.1f} "
                         f"{r['captum_lrp_ms']:>13.1f} {r['captum_ratio']:>6.2f}x"
                         + ("" if cos is None else f"   lrp.epsilon vs Captum: min cosine {cos:.6f}"))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(p, repeats=10, warmup=2)
    p.add_argument("--methods", nargs="+", default=list(TARGETS))
    p.add_argument("--torch-threads", type=int, default=0, help="torch threads for Captum (0: all cores)")
    p.add_argument("--compile-repeats", type=int, default=3)
    p.add_argument("--no-captum", action="store_true", help="skip Captum's LRP")
    p.add_argument("--profile", action="store_true", help="also profile each explainer per op type")
    p.add_argument("--profile-runs", type=int, default=3)
    args = settle(p.parse_args(argv))
    results = []
    with tempfile.TemporaryDirectory() as folder:
        with tqdm(total=len(args.models) * args.repeats, desc="bench", unit="rep", file=sys.stderr) as bar:
            for name in args.models:
                bar.set_postfix_str(f"{name}: export + compile")
                path = bench_models.export(name, Path(folder) / f"{name}.onnx")
                bar.set_postfix_str(name)
                results.append(bench_model(name, path, args, bar, folder))
    print(table(results))
    for r in results:
        for method, m in r["methods"].items():
            if "profile" in m:
                prof = m["profile"]
                print(f"\n{r['model']} {method}: {prof['run_ms']:.1f} ms/run (profiled)")
                for row in prof["ops"][:12]:
                    print(f"  {row['op_type']:<24} {row['part']:<9} {row['ms']:>8.2f} ms {100 * row['share']:>5.1f}%")
    if args.json:
        report = {"benchmark": "LRP explainers vs forward, ONNX Runtime CPU; Captum LRP vs torch forward",
                  "batch": args.batch, "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads,
                  "env": environment(),
                  "results": results}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    bad = [f"{r['model']}/{k}" for r in results for k, m in r["methods"].items()
           if m["logits_rel_err"] > 1e-4 or not m["finite"]]
    if any(r.get("epsilon_vs_captum_min_cosine", 1.0) < 0.999 for r in results if r["model"] == "vgg16"):
        bad.append("vgg16/lrp.epsilon vs Captum")
    if bad:
        print(f"wrong results: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
