"""Conservation of attention-aware LRP on the modern zoo: the sum of each sample's relevance at the
explained input (the word embeddings of the text models, the pixels of the image models) divided by
the explained score (each sample's largest; GPT-2's at the last position), one figure per sample of
modern.example_inputs (1.00: conserved). The README's table is this script's output:

    python -m models.conservation

Where relevance is not conserved, the rest went to what the rules let absorb it: the biases of the
linear layers and of LayerNormalization (LRP-0's bias share), the position and token-type embeddings
(relevance that reaches them is not the word embeddings'), and in attn_lrp the Softmax's own bias
term (AttnLRP Eq. 12). `bias-free` repeats the measurement with every bias and LayerNormalization
shift of the model set to zero (BatchNormalization's shift set to cancel its mean), which leaves
the embeddings' and Softmax's shares.
"""
from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import numpy_helper

import nnxplain
from nnxplain.runtime import session

from . import modern

MODELS = ["bert", "gpt2", "vit_torchvision", "convnext", "efficientnet"]
METHODS = {"bert": ["attn_lrp", "cp_lrp"], "gpt2": ["attn_lrp", "cp_lrp"], "vit_torchvision": ["attn_lrp", "cp_lrp"],
           "convnext": ["attn_lrp", "lrp.z"], "efficientnet": ["attn_lrp", "lrp.z"]}


def without_biases(path) -> onnx.ModelProto:
    """The model with its biases zeroed: Gemm / Conv / LayerNormalization bias inputs, and the
    constant operand of an Add that follows a MatMul (the exporters' bias of a linear layer)."""
    proto = onnx.load(path)
    consts = {t.name: t for t in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    biases = set()
    for node in proto.graph.node:
        if node.op_type in ("Gemm", "Conv", "ConvTranspose", "LayerNormalization") and len(node.input) > 2:
            biases.add(node.input[2])
        if node.op_type == "BatchNormalization":  # shift = scale * mean / std: the affine map has no offset
            scale, shift, mean, var = (numpy_helper.to_array(consts[i]) for i in node.input[1:5])
            std = np.sqrt(var + next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5))
            consts[node.input[2]].CopyFrom(numpy_helper.from_array((scale * mean / std).astype(shift.dtype),
                                                                   node.input[2]))
        if node.op_type == "Add" and any(i in producers and producers[i].op_type == "MatMul" for i in node.input):
            biases.update(i for i in node.input if i in consts)
    for name in biases & set(consts):
        zero = np.zeros_like(numpy_helper.to_array(consts[name]))
        consts[name].CopyFrom(numpy_helper.from_array(zero, name))
    return proto


def conservation(model, name: str, method: str) -> str:
    """sum of relevance / score, per sample."""
    feeds = modern.example_inputs(name)
    explainer = nnxplain.compile(model, [method])
    run = session(explainer)
    logits, relevance = run.run(["logits", method], feeds)
    scores = (logits[:, -1] if logits.ndim == 3 else logits).max(1).astype(np.float64)
    total = relevance.reshape(len(scores), -1).astype(np.float64).sum(1)
    return ", ".join(f"{r:.2f}" for r in total / scores)


def table() -> str:
    lines = ["| model | method | with biases | bias-free |", "|---|---|---|---|"]
    for name in MODELS:
        path = modern.MODERN_DIR / f"{name}.onnx"
        for method in METHODS[name]:
            lines.append(f"| {name} | {method} | {conservation(str(path), name, method)} | "
                         f"{conservation(without_biases(path), name, method)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
    sys.exit(0)
