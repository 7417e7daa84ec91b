"""Explainer / forward on transformers, against torch autograd and Captum on the same weights, in one run.

    python benchmarks/bench_transformers.py [--quick] [--models bert vit] [--steps 16] [--json out.json]

Models (random weights, nothing downloaded):
  bert  transformers' BertForSequenceClassification at BERT-base's shape (12 layers, hidden 768,
        12 heads, MLP 3072, vocabulary 30522), int64 token ids in, sequence 128, batch 8; explained
        with respect to the word embeddings (nnxplain's default for token models), gradient and
        integrated_gradients compared per embedding dimension, attn_lrp per token as LXT gives it
  vit   torchvision's ViT-B/16 at 224x224, batch 2 (8 with --batch)
Both are exported with torch.onnx's legacy exporter (opset 17). Per model: the forward pass
(ONNX Runtime CPU, intra-op spinning off), the gradient and integrated_gradients explainers in the
same session options, torch autograd's gradient (the same selected logit, to the same tensor), and
Captum's IntegratedGradients (ViT) or LayerIntegratedGradients on the word embeddings (BERT) with
the same number of steps; for BERT also attn_lrp against LXT 2.1's efficient AttnLRP on the same
weights (timed in a process of its own, since LXT patches transformers' modules; LXT must be importable:
`pip install --no-deps lxt==2.1`, or its folder on PYTHONPATH). Each figure is the median of interleaved repeats after a warm-up, and each
explainer's output is checked against its torch peer (largest error relative to the largest value).
Targets: gradient <= 2.5x forward and faster than torch autograd (issue 11); attn_lrp at most LXT's
time (issue 17).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import nnxplain  # noqa: E402
from models import modern  # noqa: E402
from nnxplain.bench import environment, make_session, median_time  # noqa: E402
from nnxplain.errors import NnxplainError  # noqa: E402

SEQUENCE = 128


def bert(batch: int):
    """BERT-base for sequence classification; the torch side explains the word embeddings' output."""
    hf = modern.transformers()
    config = hf.BertConfig(num_labels=2, attn_implementation="eager")  # BERT-base's defaults
    torch.manual_seed(0)
    net = hf.BertForSequenceClassification(config).eval()
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(1000, config.vocab_size, (batch, SEQUENCE)).astype(np.int64),
             "attention_mask": np.ones((batch, SEQUENCE), np.int64),
             "token_type_ids": np.zeros((batch, SEQUENCE), np.int64)}
    inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
    word = net.bert.embeddings.word_embeddings

    def logits(embeddings):
        return net(inputs_embeds=embeddings, attention_mask=inputs["attention_mask"],
                   token_type_ids=inputs["token_type_ids"]).logits

    def forward(*args):
        return net(input_ids=args[0], attention_mask=args[1], token_type_ids=args[2]).logits

    def gradient(index):  # the gradient at the word embeddings, per dimension (summed per token it is
        embeddings = word(inputs["input_ids"]).detach().requires_grad_(True)  # ~0 behind LayerNorm)
        out = logits(embeddings).gather(1, index[:, None]).sum()
        return torch.autograd.grad(out, embeddings)[0]

    def input_times_gradient(index):  # LXT's recipe, once its patch is in: (embeddings * grad).sum(-1)
        embeddings = word(inputs["input_ids"]).detach().requires_grad_(True)
        logits(embeddings).gather(1, index[:, None]).sum().backward()
        return (embeddings * embeddings.grad).sum(-1)

    def integrated_gradients(index, steps):
        from captum.attr import LayerIntegratedGradients
        lig = LayerIntegratedGradients(lambda ids: forward(ids, inputs["attention_mask"], inputs["token_type_ids"]),
                                       word)
        return lig.attribute(inputs["input_ids"], baselines=torch.zeros_like(inputs["input_ids"]), target=index,
                             n_steps=steps, method="riemann_right", internal_batch_size=len(index))

    net.input_times_gradient = input_times_gradient
    return net, forward, feeds, gradient, integrated_gradients


def vit(batch: int):
    """torchvision's ViT-B/16 at 224 with a random head (torchvision zero-initializes it)."""
    tv = modern.import_torchvision()
    torch.manual_seed(0)
    net = tv.models.vit_b_16(weights=None).eval()
    with torch.no_grad():
        net.heads.head.weight.normal_(0, 0.02)
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    feeds = {"input": x}
    xt = torch.from_numpy(x)

    def gradient(index):
        xg = xt.clone().requires_grad_(True)
        return torch.autograd.grad(net(xg).gather(1, index[:, None]).sum(), xg)[0]

    def integrated_gradients(index, steps):
        from captum.attr import IntegratedGradients
        return IntegratedGradients(net).attribute(xt, baselines=0.0, target=index, n_steps=steps,
                                                  method="riemann_right", internal_batch_size=len(index))

    return net, lambda x: net(x), feeds, gradient, integrated_gradients


MODELS = {"bert": (bert, 8), "vit": (vit, 2)}


def export(net, forward, feeds: dict, path: Path):
    class Forward(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, *args):
            return forward(*args)

    args = tuple(torch.from_numpy(v[:1]) for v in feeds.values())
    axes = {k: {0: "batch"} for k in feeds} | {"logits": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.mha.set_fastpath_enabled(False)  # the fused MHA kernel does not export
        # eval(): the exporter restores the wrapper's mode afterwards, recursively (a new Module is in
        # training mode, which would turn the model's dropout on for the torch side of the comparison)
        torch.onnx.export(Forward().eval(), args, str(path), dynamo=False, opset_version=17, input_names=list(feeds),
                          output_names=["logits"], dynamic_axes=axes)


def lxt_peer(batch: int, repeats: int, out: str):
    """In its own process: BERT-base patched by LXT's efficient AttnLRP (built after patching, the same
    seed), its relevance per token and the median time of one explanation (forward and backward)."""
    modern.import_torchvision()
    import transformers.models.bert.modeling_bert as modeling_bert
    from lxt.efficient import monkey_patch
    monkey_patch(modeling_bert)
    net, forward, feeds, _, _ = bert(batch)
    with torch.no_grad():
        index = forward(*(torch.from_numpy(v) for v in feeds.values())).argmax(1)
    relevance = net.input_times_gradient(index).detach().numpy()
    ms = 1000 * median_time(lambda: net.input_times_gradient(index), repeats)
    np.savez(out, relevance=relevance, ms=ms)


def lxt_row(row: dict, batch: int, repeats: int, got: np.ndarray):
    """LXT's time and the error against its relevance, from lxt_peer in a subprocess."""
    import subprocess
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "lxt.npz")
        done = subprocess.run([sys.executable, __file__, "--lxt-peer", str(batch), str(repeats), out],
                              capture_output=True, text=True)
        if done.returncode != 0:
            row["torch_peer"] = "LXT: " + (done.stderr.strip().splitlines() or ["failed"])[-1][:120]
            return
        result = np.load(out)
        row["torch_peer"], row["torch_ms"] = "LXT", float(result["ms"])
        row["error_vs_torch"] = error(got, result["relevance"])


def error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def bench_model(name: str, folder: Path, args, bar) -> list[dict]:
    build, default_batch = MODELS[name]
    net, forward, feeds, gradient, integrated_gradients = build(args.batch or default_batch)
    path = folder / f"{name}.onnx"
    export(net, forward, feeds, path)
    bar.update(1)
    batch = len(next(iter(feeds.values())))
    rows = []
    forward_session = make_session(str(path), args.threads)
    forward_session.run(None, feeds)
    with torch.no_grad():
        index = forward(*(torch.from_numpy(v) for v in feeds.values())).argmax(1)
    methods = [("gradient", lambda: gradient(index)),
               ("integrated_gradients", lambda: integrated_gradients(index, args.steps))]
    if name == "bert":
        methods.append(("attn_lrp", None))  # the peer is LXT, in a process of its own
    for method, torch_fn in methods:
        row = {"model": name, "batch": batch, "method": method}
        rows.append(row)
        try:
            # the path in blocks of `chunk` steps: all of BERT-base's 16 x 8 sequences at once do not fit in 24 GiB
            params = {"steps": args.steps, "chunk": args.chunk} if method == "integrated_gradients" else None
            per_dimension = name == "bert" and torch_fn is not None  # compared per embedding dimension
            output = f"{method}/per_dimension" if per_dimension else method
            explainer = nnxplain.compile(str(path), [method], params=params, per_dimension=per_dimension)
        except NnxplainError as exc:
            row["note"] = f"nnxplain does not compile it: {str(exc).splitlines()[0]}"
            bar.update(2 * args.repeats + 1)
            continue
        session = make_session(explainer.SerializeToString(), args.threads)
        got = session.run([output], feeds)[0]  # warm-up, and the explanation checked below
        if torch_fn is not None:
            row["error_vs_torch"] = error(got, torch_fn().detach().numpy())
        forward_times, explain_times, torch_times = [], [], []
        for _ in range(args.repeats):  # interleaved, so that drift in the machine's speed hits all alike
            forward_times.append(median_time(lambda: forward_session.run(None, feeds), 1))
            explain_times.append(median_time(lambda: session.run([output], feeds), 1))
            if torch_fn is not None:
                torch_times.append(median_time(torch_fn, 1))
            bar.update(2)
        row["forward_ms"] = 1000 * float(np.median(forward_times))
        row["ms"] = 1000 * float(np.median(explain_times))
        row["ratio"] = row["ms"] / row["forward_ms"]
        if torch_fn is None:
            lxt_row(row, batch, args.repeats, got)
        else:
            row["torch_ms"] = 1000 * float(np.median(torch_times))
            row["torch_peer"] = "torch autograd" if method == "gradient" else "Captum"
        bar.update(1)
    return rows


def table(rows: list[dict], steps: int) -> str:
    lines = ["| model | batch | method | forward ms | explainer ms | explainer / forward | torch peer ms | "
             "error vs peer |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        method = r["method"] + (f" ({steps} steps)" if r["method"] == "integrated_gradients" else "")
        if "ratio" not in r:
            lines.append(f"| {r['model']} | {r['batch']} | {method} | - | - | - | - | {r['note']} |")
            continue
        peer = f"{r['torch_peer']} {r['torch_ms']:.0f}" if "torch_ms" in r else r.get("torch_peer", "-")
        checked = f"{r['error_vs_torch']:.1e}" if "error_vs_torch" in r else "-"
        lines.append(f"| {r['model']} | {r['batch']} | {method} | {r['forward_ms']:.0f} | {r['ms']:.0f} | "
                     f"{r['ratio']:.2f}x | {peer} | {checked} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--lxt-peer"]:  # the subprocess of lxt_row
        lxt_peer(int(argv[1]), int(argv[2]), argv[3])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    p.add_argument("--batch", type=int, help="batch size (default: 8 for bert, 2 for vit)")
    p.add_argument("--steps", type=int, default=16, help="integrated_gradients steps (default: 16)")
    p.add_argument("--chunk", type=int, default=2, help="integrated_gradients steps per block (default: 2; "
                                                         "Captum runs one step per batch)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="2 repeats, 4 steps, batch 2 (a smoke run)")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ONNX Runtime's choice)")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.steps, args.batch = 2, 4, args.batch or 2
    rows = []
    per_model = 1 + 3 * (2 * args.repeats + 1)
    with tempfile.TemporaryDirectory(prefix="nnxplain-transformers-") as folder, \
            tqdm(total=per_model * len(args.models), desc="transformers", unit="step", file=sys.stderr) as bar:
        for name in args.models:
            bar.set_postfix_str(name)
            rows += bench_model(name, Path(folder), args, bar)
    print(table(rows, args.steps))
    if args.json:
        env = {**environment(), "repeats": args.repeats, "steps": args.steps, "threads": args.threads}
        Path(args.json).write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
