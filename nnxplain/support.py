"""Whether a method applies to a model, and if not why: the logic of `nnxplain support`, reusable
(models/support_matrix.py builds the README's architecture x method table from it)."""
from __future__ import annotations

import onnx

from .errors import NnxplainError


def stand_in_patterns(model: onnx.ModelProto):
    """Patterns equal to the weights: enough to tell whether a pattern method applies (the real ones
    are fitted on data, `nnxplain fit`)."""
    from . import patterns as P
    layers = P.linear_layers(P.canonical_graph(model))
    return P.Patterns("linear", P.fingerprint(layers), {layer.key: layer.rows for layer in layers})


def method_support(model: onnx.ModelProto, method) -> tuple[bool, str]:
    """(applicable, note): note names what the user must give (parameters, patterns), or why the
    method does not apply (the compile error). `model` is a loaded model (nnxplain.load.load)."""
    from .compiler import compile
    if method.kind == "perturbation":
        return perturbation_support(model, method)
    # parameters without a default get stand-ins: whether the model supports the method does not depend on them
    stand_ins = {**{k: 0.0 for k in method.required}, **{k: 1.0 for k in method.optional[:1]}}
    needs = [f"give {', '.join(stand_ins)}"] if stand_ins else []
    patterns = None
    try:
        if "patterns" in method.needs:
            patterns = stand_in_patterns(model)
            needs.append("fit patterns first")
        compile(model, [method], params=stand_ins, patterns=patterns)
    except NnxplainError as exc:
        return False, str(exc)
    return True, "; ".join(needs)


def perturbation_support(model: onnx.ModelProto, method) -> tuple[bool, str]:
    """A method of kind "perturbation" (occlusion, LIME) runs the model on perturbed images: it
    applies to a model with one float input of rank 4, [N, C, H, W]."""
    import onnx_graphsurgeon as gs

    from .compiler import explained_inputs
    try:
        inputs = explained_inputs(gs.import_onnx(model))
    except NnxplainError as exc:
        return False, str(exc)
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        found = ", ".join(f"'{t.name}' of rank {len(t.shape)}" for t in inputs)
        return False, f"perturbation methods (occlusion, LIME) need images: one float input [N, C, H, W] (the model has {found})"
    return True, "analyze and evaluate: no compiled graph"
