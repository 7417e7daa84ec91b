"""The speed targets in one command: every explainer / forward ratio of the target table, measured in
one run, with the peers that are installed, printed as a table and written as JSON.

    python benchmarks/bench_targets.py [--quick] [--json targets.json] [--models vgg16 resnet18]

Per benchmark model (benchmarks/bench_models.py: VGG-16 and ResNet-18 layouts at reduced width,
3x224x224, batch 8) the explainers are timed by `nnxplain.bench.bench` against the model's forward
pass (ONNX Runtime CPU, intra-op spinning off for both, interleaved repeats after a warm-up), and
torch autograd / Captum on the same weights and input where they have the method. Pattern fitting
throughput comes from bench_patterns.py's measurement (one fitting step against one forward run).
The BERT-base-shaped encoder row (12 layers, hidden 768, 12 heads, sequence 128, float embeddings in)
is measured where nnxplain compiles its gradient; otherwise the row says why not.

Peers that are not installed (zennit, iNNvestigate) are reported as such: their column stays empty
rather than holding a figure measured elsewhere.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models  # noqa: E402  (benchmarks/bench_models.py)
import bench_patterns  # noqa: E402

import nnxplain  # noqa: E402
from nnxplain.bench import bench, environment, make_session, median_time  # noqa: E402
from nnxplain.errors import NnxplainError  # noqa: E402


@dataclass
class Target:
    key: str                       # the method (or measurement) name
    target: str                    # the target as the issue states it
    met: Callable[[dict], bool]    # row -> whether the target is met
    peer: str = ""                 # what the peer column holds


TARGETS = [
    Target("gradient", "<= 2.0x", lambda r: r["ratio"] <= 2.0, "torch autograd x torch forward"),
    Target("lrp.epsilon", "<= 2.5x", lambda r: r["ratio"] <= 2.5, "Captum LRP x torch forward"),
    Target("pattern.attribution", "<= 2.5x", lambda r: r["ratio"] <= 2.5),
    Target("lrp.sequential_preset_a", "<= 4x", lambda r: r["ratio"] <= 4.0),
    Target("lrp.alpha_2_beta_1", "<= 5x", lambda r: r["ratio"] <= 5.0),
    Target("epsilon_plus_flat", ">= 3.5x faster than zennit",
           lambda r: r.get("zennit_vs_nnxplain", 0) >= 3.5, "zennit ms / nnxplain ms"),
    Target("integrated_gradients", "<= 55x (32 steps)", lambda r: r["ratio"] <= 55.0, "Captum IG-32 x torch forward"),
    Target("pattern fitting", ">= 1/3 of forward throughput", lambda r: r["ratio"] >= 1 / 3),
    Target("gradient (BERT-base encoder)", "<= 2.5x and faster than torch autograd",
           lambda r: r["ratio"] <= 2.5 and r.get("peer_ms", float("inf")) > r["ms"], "torch autograd ms"),
]
METHODS = [t.key for t in TARGETS[:7]]
PARAMS = {"integrated_gradients.steps": 32}


def import_zennit():
    """zennit imports torchvision, and the torchvision wheels on this index are CUDA builds whose import
    fails beside a CPU torch (`operator torchvision::nms does not exist`). Its Python model code needs
    no C++ op: define the two operator schemas its meta registrations decorate, then import again."""
    try:
        import zennit  # noqa: F401
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
        for name in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "zennit")]:
            del sys.modules[name]
        library = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_zennit.library = library  # kept alive: the schemas go with it
        import zennit  # noqa: F401


def zennit_epsilon_plus_flat(net: torch.nn.Module):
    """(x, target) -> relevance by zennit's EpsilonPlusFlat composite, or a string saying why there is none."""
    try:
        import_zennit()
        from zennit.attribution import Gradient
        from zennit.canonizers import SequentialMergeBatchNorm
        from zennit.composites import EpsilonPlusFlat
    except Exception as exc:  # not installed (see benchmarks/README for how)
        return f"zennit not importable ({type(exc).__name__})"

    def run(x, target):
        composite = EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])  # BatchNorm folded, as nnxplain does
        with Gradient(net, composite) as attributor:
            _, relevance = attributor(x, torch.nn.functional.one_hot(target, bench_models.NUM_CLASSES).float())
        return relevance
    return run


def _short(note: str) -> str:
    """Captum's refusal in a table cell: "Module of type <class '...Flatten'> has no rule defined and
    no default rule ..." becomes "Captum has no LRP rule for Flatten"."""
    match = re.search(r"<class '[\w.]*\.(\w+)'> has no rule", note)
    return f"Captum has no LRP rule for {match.group(1)}" if match else note


def median_ms(fn, repeats: int) -> float:
    return 1000 * median_time(fn, repeats)


def bench_cnn(name: str, path: Path, args, bar) -> list[dict]:
    twin = bench_models.build(name)
    x = np.random.default_rng(0).standard_normal((args.batch, *bench_models.INPUT_SHAPE)).astype(np.float32)
    patterns = nnxplain.patterns.fit(str(path), x, "relu", progress=False)  # timing only: any data will do
    result = bench(str(path), METHODS, batch=args.batch, repeats=args.repeats, params=PARAMS, twin=twin,
                   threads=args.threads, memory=False, progress=False, patterns=patterns)
    bar.update(len(METHODS))
    rows = []
    for r in result["rows"]:
        row = {"model": name, "key": r["method"], "ms": r["ms"], "forward_ms": r["forward_ms"], "ratio": r["ratio"],
               "compile_s": r["compile_s"]}
        if "captum_ratio" in r:
            row.update(peer_ms=r["captum_ms"], peer_ratio=r["captum_ratio"])
        elif r.get("captum_note") and r["method"] in ("gradient", "lrp.epsilon", "integrated_gradients"):
            row["peer_note"] = _short(r["captum_note"])
        rows.append(row)
    zennit = zennit_epsilon_plus_flat(twin)
    plus_flat = next(row for row in rows if row["key"] == "epsilon_plus_flat")
    if isinstance(zennit, str):
        plus_flat["peer_note"] = zennit
    else:
        xt = torch.from_numpy(x)
        with torch.no_grad():
            target = twin(xt).argmax(1)
        zennit(xt, target)  # warm-up
        plus_flat["peer_ms"] = median_ms(lambda: zennit(xt, target), args.repeats)
        plus_flat["zennit_vs_nnxplain"] = plus_flat["peer_ms"] / plus_flat["ms"]
    fitting = bench_patterns.bench(name, path, SimpleNamespace(batch=args.batch, threads=args.threads,
                                                               warmup=1, repeats=args.repeats), bar)
    relu = next(f for f in fitting if f["pattern_type"] == "relu")
    rows.append({"model": name, "key": "pattern fitting", "ratio": relu["throughput_ratio"],
                 "ms": relu["fit_step_ms"], "forward_ms": relu["forward_ms"]})
    return rows


class Encoder(torch.nn.Module):
    """BERT-base's shape: 12 post-norm encoder layers (hidden 768, 12 heads, GELU MLP 3072) on float
    embeddings, and a 2-class head on the first token."""

    def __init__(self, layers: int):
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(768, 12, 3072, dropout=0.0, activation="gelu", batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = torch.nn.Linear(768, 2)

    def forward(self, x):
        return self.head(self.encoder(x)[:, 0])


def bench_encoder(folder: str, args, bar) -> dict:
    row = {"model": f"encoder-{args.encoder_layers}x768-seq128", "key": "gradient (BERT-base encoder)"}
    torch.manual_seed(0)
    net = Encoder(args.encoder_layers).eval()
    x = torch.randn(args.batch, 128, 768)
    path = Path(folder) / "encoder.onnx"
    with warnings.catch_warnings():  # the legacy exporter warns that it is deprecated
        warnings.simplefilter("ignore")
        torch.backends.mha.set_fastpath_enabled(False)  # the fused MHA kernel does not export
        torch.onnx.export(net, (x[:1],), str(path), dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    try:
        explainer = nnxplain.compile(str(path), ["gradient"])
    except NnxplainError as exc:
        row["note"] = f"nnxplain does not compile it yet: {str(exc).splitlines()[0]}"
        return row
    forward, explain = make_session(str(path), args.threads), make_session(explainer.SerializeToString(), args.threads)
    feeds = {"x": x.numpy()}
    out = explainer.graph.output[-1].name
    forward.run(None, feeds), explain.run([out], feeds)
    row["forward_ms"] = median_ms(lambda: forward.run(None, feeds), args.repeats)
    row["ms"] = median_ms(lambda: explain.run([out], feeds), args.repeats)
    row["ratio"] = row["ms"] / row["forward_ms"]

    def autograd():
        xg = x.clone().requires_grad_(True)
        logits = net(xg)
        logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
        return xg.grad.numpy()
    want = autograd()
    got = explain.run([out], feeds)[0]
    row["error_vs_autograd"] = float(np.abs(got - want).max() / np.abs(want).max())  # checked, not only timed
    row["peer_ms"] = median_ms(autograd, args.repeats)
    bar.update(1)
    return row


def table(rows: list[dict]) -> str:
    by_key = {t.key: t for t in TARGETS}
    head = "| model | measure | target | ms | forward ms | ratio | peer | met |\n|---|---|---|---|---|---|---|---|"
    lines = [head]
    for r in rows:
        t = by_key[r["key"]]
        if "ratio" not in r:
            lines.append(f"| {r['model']} | {r['key']} | {t.target} | - | - | - | - | no: {r['note']} |")
            continue
        if "zennit_vs_nnxplain" in r:
            peer = f"zennit {r['peer_ms']:.1f} ms ({r['zennit_vs_nnxplain']:.2f}x nnxplain's time)"
        elif "peer_ratio" in r:
            peer = f"{t.peer.split(' x ')[0]} {r['peer_ratio']:.2f}x"
        elif "peer_ms" in r:
            peer = f"{t.peer} {r['peer_ms']:.1f}"
        else:
            peer = r.get("peer_note", "")
        if "error_vs_autograd" in r:
            peer += f" (gradient's error {r['error_vs_autograd']:.1e})"
        unit = "" if r["key"] == "pattern fitting" else "x"
        lines.append(f"| {r['model']} | {r['key']} | {t.target} | {r['ms']:.1f} | {r['forward_ms']:.1f} | "
                     f"{r['ratio']:.2f}{unit} | {peer} | {'yes' if t.met(r) else 'no'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 repeats (a smoke run, noisier numbers)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ONNX Runtime's choice)")
    p.add_argument("--models", nargs="+", choices=sorted(bench_models.MODELS), default=list(bench_models.MODELS))
    p.add_argument("--encoder-layers", type=int, default=12, help="layers of the BERT-shaped encoder (0: skip it)")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = 3
    rows = []
    steps = len(args.models) * (len(METHODS) + 2 * args.repeats) + (1 if args.encoder_layers else 0)
    with tempfile.TemporaryDirectory(prefix="nnxplain-targets-") as folder, \
            tqdm(total=steps, desc="targets", unit="step", file=sys.stderr) as bar:
        for name in args.models:
            bar.set_postfix_str(name)
            rows += bench_cnn(name, bench_models.export(name, Path(folder) / f"{name}.onnx"), args, bar)
        if args.encoder_layers:
            bar.set_postfix_str("encoder")
            rows.append(bench_encoder(folder, args, bar))
    for r in rows:
        r["target"] = next(t.target for t in TARGETS if t.key == r["key"])
        r["met"] = "ratio" in r and next(t for t in TARGETS if t.key == r["key"]).met(r)
    print(table(rows))
    if args.json:
        env = {**environment(), "batch": args.batch, "repeats": args.repeats, "threads": args.threads}
        Path(args.json).write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
