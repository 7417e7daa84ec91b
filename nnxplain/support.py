"""Whether a method applies to a model, and if not why: the logic of `nnxplain support`, reusable
(models/support_matrix.py builds the README's architecture x method table from it)."""
from __future__ import annotations

import onnx

from .errors import InternalError, NnxplainError
from .load import first_line

INTERNAL = "internal error (a bug of nnxplain's: please report it)"


def stand_in_patterns(model: onnx.ModelProto, graph=None):
    """Patterns equal to the weights: enough to tell whether a pattern method applies (the real ones
    are fitted on data, `nnxplain fit`). `graph`: the model's canonical graph, where it is at hand."""
    from . import patterns as P
    layers = P.linear_layers(graph if graph is not None else P.canonical_graph(model))
    return P.Patterns("linear", P.fingerprint(layers), {layer.key: layer.rows for layer in layers})


def method_support(model: onnx.ModelProto, method) -> tuple[bool, str]:
    """(applicable, note): note names what the user must give (parameters, patterns), or why the
    method does not apply (the compile error). `model` is a loaded model (nnxplain.load.load)."""
    return next(each_method_support(model, [method]))[1:]


def each_method_support(model: onnx.ModelProto, methods):
    """(method, applicable, note) for each method, as `method_support` answers it, with the model
    loaded and canonicalized once: each method is built on a copy of that graph and exported, which
    is what compiling it alone does after canonicalization (a model with many methods answered in
    one compile's preparation, not one per method)."""
    from .compiler import build, canonical_graph, explained_output, export, resolve_methods, sequence_output
    onnx_errors = (onnx.checker.ValidationError, onnx.shape_inference.InferenceError)
    skipped = []
    try:
        graph = canonical_graph(model, skipped=skipped)
    except onnx_errors as exc:
        graph = NnxplainError(f"onnx rejects the model: {str(exc).strip().splitlines()[0]}")
    except NnxplainError as exc:
        graph = exc
    patterns = None
    for method in methods:
        if method.kind == "perturbation":
            yield (method, *perturbation_support(model, method))
            continue
        # parameters without a default get stand-ins: whether the model supports the method does not depend on them
        stand_ins = {**{k: 0.0 for k in method.required}, **{k: 1.0 for k in method.optional[:1]}}
        needs = [f"give {', '.join(stand_ins)}"] if stand_ins else []
        try:
            if isinstance(graph, Exception):
                raise graph
            if "patterns" in method.needs:
                patterns = patterns or stand_in_patterns(model, graph)
                needs.append("fit patterns first")
            # a sequence output is explained at one position, any one alike here: the last
            position = -1 if sequence_output(graph, explained_output(graph, None)) else None
            export(build(graph.copy(), resolve_methods([method], stand_ins), "max_activation", None, patterns, skipped,
                         position=position))
        except onnx_errors as exc:
            yield method, False, f"onnx rejects the model: {str(exc).strip().splitlines()[0]}"
        except InternalError as exc:
            yield method, False, f"{INTERNAL}: {exc}"
        except NnxplainError as exc:
            yield method, False, str(exc)
        except Exception as exc:  # noqa: BLE001 -- a bug of ours at one method: report it, answer the others
            yield method, False, f"{INTERNAL}: {type(exc).__name__}: {first_line(exc)}"
        else:
            yield method, True, "; ".join(needs)


def perturbation_support(model: onnx.ModelProto, method) -> tuple[bool, str]:
    """A method of kind "perturbation" (occlusion, LIME) runs the model on perturbed images: it
    applies to a model with one float input of rank 4, [N, C, H, W]."""
    import onnx_graphsurgeon as gs

    from .compiler import explained_inputs
    try:
        inputs = explained_inputs(gs.import_onnx(model))
    except NnxplainError as exc:
        return False, str(exc)
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].inputs:  # inputs: computed, an embedding
        found = ", ".join("token ids" if t.inputs else f"'{t.name}' of rank {len(t.shape)}" for t in inputs)
        return False, f"perturbation methods (occlusion, LIME) need images: one float input [N, C, H, W] (the model has {found})"
    return True, "analyze and evaluate: no compiled graph"
