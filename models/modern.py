"""Today's architectures at small width: vision transformers, modern CNNs and text transformers,
built from torchvision's and Hugging Face transformers' own model code (config objects, seeded random
weights, nothing downloaded) and exported with both of torch's exporters.

    python -m models.modern              # writes models/modern/<name>.onnx and <name>.dynamo.onnx
    python -m models.modern --ops        # the op types of every export (the README table)

Every export is checked against its torch module at export time (ONNX Runtime within 1e-5 of the
largest output, the tolerance of models/archs.py). `build(name)` returns the torch module with the
same weights (the seed fixes them), the oracle of the tests. Where an exporter cannot export a
model, `export_all` records why instead of writing a file (see `EXPORT_NOTES`).

Setup facts (see the README's test environment): torchvision's wheels on the index are CUDA builds
whose import fails beside torch's CPU build (`operator torchvision::nms does not exist`), and
transformers imports torchvision when it is installed; `import_torchvision` defines the two operator
schemas its Python code decorates before importing it, which is all its model code needs.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

MODERN_DIR = Path(__file__).resolve().parent / "modern"
SEED = 0
IMAGE = (3, 32, 32)
SEQUENCE = 12
VOCAB = 96


def import_torchvision():
    """torchvision, importable beside a CPU torch: its C++ ops (nms, roi_align, ...) are not needed by
    the model code, but its meta registrations decorate `torchvision::nms` and `qnms`, so those two
    schemas must exist."""
    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        library = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_torchvision.library = library  # the schemas live as long as this object
        import torchvision
    return torchvision


def transformers():
    import_torchvision()  # first: transformers imports torchvision where it is installed
    import transformers as hf
    hf.logging.set_verbosity_error()
    return hf


# ------------------------------------------------------------------------------------- builders


def vit():
    """transformers' ViT: patch embedding (Conv), class token and position embedding, 2 pre-norm
    encoder layers (LayerNorm, self-attention with Softmax, GELU MLP), classifier on the class token."""
    hf = transformers()
    config = hf.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=64, num_labels=10, attn_implementation="eager")
    return hf.ViTForImageClassification(config)


def vit_torchvision():
    """torchvision's VisionTransformer (nn.MultiheadAttention) at small width."""
    tv = import_torchvision()
    return tv.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32,
                                       mlp_dim=64, num_classes=10)


def swin():
    """transformers' Swin: shifted-window attention (window partition by Reshape/Transpose, the
    shift by Roll/Slice+Concat, relative position bias by Gather), patch merging, LayerNorm."""
    hf = transformers()
    config = hf.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4,
                           mlp_ratio=2.0, num_labels=10, attn_implementation="eager")
    return hf.SwinForImageClassification(config)


def convnext():
    """torchvision's ConvNeXt blocks: depthwise 7x7 Conv, LayerNorm over channels (channels-last
    permutes), GELU MLP as Linear layers, layer scale (Mul by a constant), stochastic depth off."""
    tv = import_torchvision()
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt
    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], num_classes=10)


def efficientnet():
    """torchvision's EfficientNet-B0 layout at width 0.25, depth 0.25: MBConv blocks with SiLU and
    squeeze-and-excitation gates (a Mul of two computed tensors)."""
    tv = import_torchvision()
    from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf
    setting, last = _efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
    return EfficientNet(setting, dropout=0.0, last_channel=last, num_classes=10)


def mobilenetv3():
    """torchvision's MobileNetV3-Small at width 0.25: HardSwish, HardSigmoid squeeze-excite gates."""
    tv = import_torchvision()
    return tv.models.mobilenet_v3_small(width_mult=0.25, num_classes=10, dropout=0.0)


def regnet():
    """transformers' RegNetY: grouped convolutions, squeeze-excite with Sigmoid, residual Add."""
    hf = transformers()
    config = hf.RegNetConfig(embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], groups_width=8,
                             layer_type="y", num_labels=10)
    return hf.RegNetForImageClassification(config)


def bert():
    """transformers' BERT for sequence classification: word + position + token-type embeddings
    (Gather from int64 ids), 2 post-norm encoder layers, pooler (Tanh), classifier."""
    hf = transformers()
    config = hf.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=64, num_labels=3,
                           attn_implementation="eager")
    return hf.BertForSequenceClassification(config)


def distilbert():
    """transformers' DistilBERT for sequence classification: word + position embeddings, 2 post-norm
    layers (its own attention module), the first token's pre-classifier with ReLU."""
    hf = transformers()
    config = hf.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                 max_position_embeddings=64, num_labels=3, attn_implementation="eager")
    return hf.DistilBertForSequenceClassification(config)


def convnext_hf():
    """transformers' ConvNeXt (its own LayerNorm over channels first and last, GELU, layer scale)."""
    hf = transformers()
    config = hf.ConvNextConfig(num_channels=3, num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], num_labels=10)
    return hf.ConvNextForImageClassification(config)


def gpt2():
    """transformers' GPT-2 causal LM: token + position embeddings, causal self-attention (masked by
    Where), GELU (tanh) MLP as Conv1D (Gemm-like MatMul), tied LM head; logits [batch, seq, vocab]."""
    hf = transformers()
    config = hf.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                           attn_implementation="eager")
    return hf.GPT2LMHeadModel(config)


class UNet(nn.Module):
    """A two-level U-Net: Conv-ReLU encoders, MaxPool down, ConvTranspose and nearest / bilinear
    Resize up, skip connections by Concat, a 1x1 Conv head; the output summed per class to logits."""

    def __init__(self, width: int = 8, classes: int = 4):
        super().__init__()
        block = lambda c_in, c_out: nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(),  # noqa: E731
                                                   nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU())
        self.enc1, self.enc2, self.mid = block(3, width), block(width, 2 * width), block(2 * width, 4 * width)
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.dec2 = block(4 * width, 2 * width)
        self.up1 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec1 = block(2 * width + width, width)
        self.head = nn.Conv2d(width, classes, 1)
        self.resize = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        masks = self.head(self.resize(self.pool(d1)))
        return masks.mean((2, 3))


def unet():
    return UNet()


BUILDERS = {"vit": vit, "vit_torchvision": vit_torchvision, "swin": swin, "convnext": convnext,
            "convnext_hf": convnext_hf, "efficientnet": efficientnet, "mobilenetv3": mobilenetv3, "regnet": regnet,
            "bert": bert, "distilbert": distilbert, "gpt2": gpt2, "unet": unet}
TEXT = {"bert", "distilbert", "gpt2"}


def build(name: str) -> nn.Module:
    """The model with its seeded random weights, in eval mode. Zero-initialized parameters (heads,
    biases, layer norms' shifts) get random values too, so that no explanation is trivially zero."""
    torch.manual_seed(SEED)
    model = BUILDERS[name]()
    generator = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 1 or not parameter.abs().sum():
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    if name in TEXT:
        model.config.use_cache = False
    return Wrapped(model, name).eval()


class Wrapped(nn.Module):
    """The model with tensor inputs and the logits as its one output (transformers return objects)."""

    def __init__(self, model: nn.Module, name: str):
        super().__init__()
        self.model, self.name = model, name

    def forward(self, *inputs):
        if self.name == "bert":
            ids, mask, types = inputs
            return self.model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        if self.name == "distilbert":
            ids, mask = inputs
            return self.model(input_ids=ids, attention_mask=mask).logits
        if self.name == "gpt2":  # the causal and padding mask built here, 4-D and additive: transformers
            ids, mask = inputs     # builds it with vmap, which the legacy exporter cannot trace
            length = ids.shape[1]
            causal = torch.tril(torch.ones(length, length, dtype=torch.float32))
            allowed = causal[None, None] * mask[:, None, None, :].to(torch.float32)
            additive = (1.0 - allowed) * torch.finfo(torch.float32).min
            return self.model(input_ids=ids, attention_mask=additive).logits
        out = self.model(inputs[0])
        return out.logits if hasattr(out, "logits") else out


def example_inputs(name: str, batch: int = 2) -> dict[str, np.ndarray]:
    """Named inputs for one run: images in [-1, 1), token ids, an attention mask that pads the last
    two positions of the second sample, token types 0 then 1."""
    rng = np.random.default_rng(SEED)
    if name not in TEXT:
        return {"input": rng.uniform(-1, 1, (batch, *IMAGE)).astype(np.float32)}
    ids = rng.integers(1, VOCAB, (batch, SEQUENCE)).astype(np.int64)
    mask = np.ones((batch, SEQUENCE), np.int64)
    mask[1:, -2:] = 0
    if name in ("gpt2", "distilbert"):
        return {"input_ids": ids, "attention_mask": mask}
    types = np.zeros((batch, SEQUENCE), np.int64)
    types[:, SEQUENCE // 2:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def dynamic_axes(name: str, inputs: dict) -> dict:
    axes = {k: {0: "batch", 1: "sequence"} if name in TEXT else {0: "batch"} for k in inputs}
    axes["logits"] = {0: "batch", 1: "sequence"} if name == "gpt2" else {0: "batch"}
    return axes


def export(name: str, path: Path, dynamo: bool) -> Path:
    """Export model `name` to `path` with the legacy (opset 17) or the dynamo exporter (opset 18,
    weights beside it in `<path>.data`), and check it against torch."""
    model = build(name)
    inputs = example_inputs(name)
    args = tuple(torch.from_numpy(v) for v in inputs.values())
    with warnings.catch_warnings():  # deprecation and tracer warnings of the exporters
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch", min=1)
            shapes = tuple({0: batch, 1: torch.export.Dim("sequence", min=2, max=64)} if name in TEXT else {0: batch}
                           for _ in inputs)
            program = torch.onnx.export(model, args, dynamo=True, opset_version=18, input_names=list(inputs),
                                        output_names=["logits"], dynamic_shapes=(shapes,),  # forward(*inputs)
                                        verbose=False)
            program.save(str(path), external_data=True)
        else:
            torch.onnx.export(model, args, str(path), dynamo=False, opset_version=17, input_names=list(inputs),
                              output_names=["logits"], dynamic_axes=dynamic_axes(name, inputs))
    check(name, path, model, inputs)
    return path


def check(name: str, path: Path, model: nn.Module, inputs: dict):
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: inputs[i.name] for i in session.get_inputs()}  # an exporter may drop an unused input
    got = session.run(["logits"], feeds)[0]
    with torch.no_grad():
        want = model(*(torch.from_numpy(v) for v in inputs.values())).numpy()
    error = np.abs(got - want).max() / np.abs(want).max()
    if not error < 1e-5:
        raise AssertionError(f"{path.name}: ONNX Runtime differs from torch by {error:.1e} of the largest logit")


def export_all(names=None) -> dict[str, str]:
    """Write both exports of every model; {file name: why it was not written} for those that failed."""
    MODERN_DIR.mkdir(exist_ok=True)
    failures = {}
    for name in names or BUILDERS:
        for dynamo in (False, True):
            path = MODERN_DIR / f"{name}{'.dynamo' if dynamo else ''}.onnx"
            try:
                export(name, path, dynamo)
            except Exception as exc:  # an exporter's limit: recorded, the other files still written
                failures[path.name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
                for leftover in (path, Path(str(path) + ".data")):
                    leftover.unlink(missing_ok=True)
    return failures


def op_types(path: Path) -> list[str]:
    return sorted({node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"models to export (default: all of {', '.join(BUILDERS)})")
    parser.add_argument("--ops", action="store_true", help="print the op types of every export instead")
    args = parser.parse_args(argv)
    if args.ops:
        print("| file | op types |\n|---|---|")
        for path in sorted(MODERN_DIR.glob("*.onnx")):
            print(f"| `{path.name}` | {', '.join(op_types(path))} |")
        return
    for file, why in export_all(args.names or None).items():
        print(f"not written: {file}: {why}")


if __name__ == "__main__":
    main()
