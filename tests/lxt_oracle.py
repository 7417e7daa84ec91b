"""LXT 2.1's relevance on a modern-zoo model, the oracle of tests/test_attn_lrp_lxt.py.

    python tests/lxt_oracle.py MODEL VARIANT OUT.npz      MODEL: bert | gpt2 | vit_torchvision
                                                          VARIANT: attn_lrp | cp_lrp

Run in a process of its own: LXT's efficient mode monkey-patches transformers' and torchvision's
modules for the whole process. The model is models.modern.build(MODEL) (the same seeded weights as
the committed ONNX exports), built after patching. The relevance is LXT's efficient-mode recipe: the explained logit (each sample's largest, at
the last position for GPT-2) backpropagated with gradient 1, then input times gradient, at the word
embeddings (summed over the hidden dimension: per token) for the text models and at the pixels for ViT.
The patched model's logits are checked against the committed ONNX export's first.

What is patched, per model and variant (LXT's own functions throughout):
  bert attn_lrp  lxt.efficient.monkey_patch(modeling_bert) (LXT's default map: its BERT module,
                 LayerNorm with the std held constant, identity rule on the GELU and pooler Tanh, the
                 attention scores' and context's gradient halved)
  bert cp_lrp    the same patch with the attention weights held constant: LXT ships no CP map for BERT;
                 CP-LRP treats the softmax output as a constant, so here the softmax output is detached
                 and LXT's halving of the context is undone (the values then get the whole gradient,
                 as LXT's own CP attention does for GPT-2 and ViT)
  gpt2           LXT's attnLRP / cp_LRP maps for modeling_gpt2
  vit_torchvision cp_lrp: LXT's default map for torchvision's vision_transformer (its cp_LRP);
                 attn_lrp: the same map with nn.MultiheadAttention's inputs wrapped by LXT's AttnLRP
                 attention rule (divide_gradient: query and key by 4, value by 2, as its
                 wrap_attention_forward does for transformers' attention functions)
"""
from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import modern  # noqa: E402


def patch(name: str, variant: str):
    modern.import_torchvision()
    from lxt.efficient import monkey_patch
    from lxt.efficient import patches
    from lxt.efficient.rules import divide_gradient
    if name == "bert":
        import transformers.models.bert.modeling_bert as modeling_bert
        import lxt.efficient.models.bert as lxt_bert
        if variant == "cp_lrp":
            lxt_bert.divide_gradient = lambda t, factor=2: t
            softmax = torch.nn.functional.softmax
            lxt_bert.nn = _with_functional(lxt_bert.nn, softmax=lambda *a, **k: softmax(*a, **k).detach())
        monkey_patch(modeling_bert)
    elif name == "gpt2":
        import transformers.models.gpt2.modeling_gpt2 as modeling_gpt2
        import lxt.efficient.models.gpt2 as lxt_gpt2
        monkey_patch(modeling_gpt2, lxt_gpt2.attnLRP if variant == "attn_lrp" else lxt_gpt2.cp_LRP)
    else:
        from torchvision.models import vision_transformer
        import lxt.efficient.models.vit_torch as lxt_vit
        patch_map = dict(lxt_vit.cp_LRP)
        if variant == "attn_lrp":
            def attn_mha_forward(self, query, key, value, *args, **kwargs):
                return self.original_forward(divide_gradient(query, 4), divide_gradient(key, 4),
                                             divide_gradient(value, 2), *args, **kwargs)
            patch_map[vision_transformer.nn.MultiheadAttention] = partial(patches.patch_method, attn_mha_forward,
                                                                          keep_original=True)
        monkey_patch(vision_transformer, patch_map)


class _with_functional:
    """A stand-in for the `nn` module a patched module reads, whose `functional` overrides some names."""

    def __init__(self, nn, **overrides):
        self._nn = nn
        self.functional = _Overrides(nn.functional, overrides)

    def __getattr__(self, name):
        return getattr(self._nn, name)


class _Overrides:
    def __init__(self, module, overrides):
        self._module, self._overrides = module, overrides

    def __getattr__(self, name):
        return self._overrides.get(name, getattr(self._module, name))


def relevance(name: str) -> np.ndarray:
    model = modern.build(name)
    inputs = {k: torch.from_numpy(v) for k, v in modern.example_inputs(name).items()}
    if name == "vit_torchvision":
        x = inputs["input"].clone().requires_grad_(True)
        logits = model(x)
        logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
        return (x * x.grad).detach().numpy()
    inner = model.model
    embeddings = inner.get_input_embeddings()(inputs["input_ids"]).detach().requires_grad_(True)
    if name == "bert":
        logits = inner(inputs_embeds=embeddings, attention_mask=inputs["attention_mask"],
                       token_type_ids=inputs["token_type_ids"]).logits
    else:  # GPT-2: the wrapper's 4-D additive causal + padding mask, the last position's scores
        length = embeddings.shape[1]
        causal = torch.tril(torch.ones(length, length))
        allowed = causal[None, None] * inputs["attention_mask"][:, None, None, :].to(torch.float32)
        additive = (1.0 - allowed) * torch.finfo(torch.float32).min
        logits = inner(inputs_embeds=embeddings, attention_mask=additive).logits[:, -1]
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    return (embeddings * embeddings.grad).sum(-1).detach().numpy()


def main(argv):
    name, variant, out = argv
    patch(name, variant)  # before the model is built: LXT's BERT patch replaces the module's classes
    inputs = modern.example_inputs(name)
    with torch.no_grad():
        patched = modern.build(name)(*(torch.from_numpy(v) for v in inputs.values())).numpy()
    import onnxruntime as ort
    export = ort.InferenceSession(str(modern.MODERN_DIR / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    logits = export.run(["logits"], inputs)[0]
    assert np.abs(patched - logits).max() <= 1e-5 * np.abs(logits).max(), "LXT's patched model computes other logits"
    np.savez(out, relevance=relevance(name))


if __name__ == "__main__":
    main(sys.argv[1:])
