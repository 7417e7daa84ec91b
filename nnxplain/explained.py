"""What an explainer explains: the tensors whose relevance it outputs.

By default these are the model's float inputs. A model without any (a token model: int64 ids in,
as BERT and GPT-2) is explained with respect to its word embeddings: the output of an embedding
lookup, a Gather whose data is a float table (an initializer) and whose indices are an int graph
input, directly or through ops that keep the ids' values (Cast, Reshape, Unsqueeze, Squeeze,
Flatten, Identity). The position embedding's indices are computed from the ids' shape, not their
values, so it is no lookup in this sense; a token-type table read from an int input is. Of several
lookups the default is the one with the largest table (the vocabulary: BERT's word embeddings beside
its 2-row token-type table), the first in graph order among equally large ones. `wrt` chooses
otherwise: a float input's name, an int input's name (the lookup reading it), or a lookup's output
or table name.

The explanation of a lookup's output is summed over the table's row (the hidden dimension):
relevance per token, [batch, seq]; `per_dimension` adds the unsummed [batch, seq, hidden].
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .errors import NnxplainError, UnsupportedError

# ops through which a lookup's indices may come from an int input with their values unchanged
KEEPS_VALUES = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"}
INT_TYPES = {"int64", "int32"}


def explained_inputs(graph: gs.Graph, wrt: str | None = None) -> list[gs.Tensor]:
    """The tensors to explain: the one `wrt` names, else the float inputs, else the default
    embedding lookup's output (see the module's docstring)."""
    from .backward import FLOAT_TYPES, dtype_name
    if wrt is not None:
        return [_named(graph, wrt)]
    inputs = [t for t in graph.inputs if t.dtype is not None and dtype_name(t.dtype) in FLOAT_TYPES]
    if not inputs:
        lookups = embedding_lookups(graph)
        if not lookups:
            raise UnsupportedError("the model has no float input to explain, and no embedding lookup (a Gather from "
                                   "a float table indexed by an int input)")
        return [_output(max(lookups, key=lambda node: node.inputs[0].shape[0]))]  # max: the first of the largest
    for t in inputs:
        _check_float_input(t)
    return inputs


def embedding_lookups(graph: gs.Graph) -> list[gs.Node]:
    """The graph's embedding lookups, in graph order."""
    return [node for node in graph.nodes if lookup_input(node) is not None]


def lookup_input(node: gs.Node) -> gs.Variable | None:
    """The int graph input whose ids an embedding lookup reads (None: the node is no lookup)."""
    from .backward import FLOAT_TYPES, dtype_name
    if node.op != "Gather" or node.attrs.get("axis", 0) != 0 or len(node.inputs) != 2:
        return None
    table, ids = node.inputs
    if not isinstance(table, gs.Constant) or table.values.ndim < 2 or dtype_name(table.values.dtype) not in FLOAT_TYPES:
        return None
    while ids.inputs and ids.inputs[0].op in KEEPS_VALUES and ids.inputs[0].inputs:
        ids = ids.inputs[0].inputs[0]
    if ids.inputs or isinstance(ids, gs.Constant) or dtype_name(ids.dtype) not in INT_TYPES:
        return None  # computed ids (positions from the shape) or constant ones: no lookup of the input
    return ids


def table_of(x: gs.Tensor) -> np.ndarray | None:
    """The table of the lookup whose output x is (None: x is no lookup's output)."""
    producer = x.inputs[0] if x.inputs else None
    if producer is None or lookup_input(producer) is None:
        return None
    return producer.inputs[0].values


def fed_input(x: gs.Tensor) -> str:
    """The name of the model input whose samples x's explanation follows: x's own, or for a lookup's
    output the ids' input."""
    return lookup_input(x.inputs[0]).name if table_of(x) is not None else x.name


def hidden_axes(x: gs.Tensor) -> list[int]:
    """The axes of a lookup's output that a table row spans (summed for the relevance per token);
    none for an input."""
    table = table_of(x)
    if table is None:
        return []
    rank = len(x.shape)
    return list(range(rank - (table.ndim - 1), rank))


def _output(node: gs.Node) -> gs.Tensor:
    """The lookup's output, its shape completed from the ids input's where inference left dims
    unnamed (a Reshape(ids, [-1, seq]) gives GPT-2's an unnamed batch dim): the ids input's dims
    followed by a row's. The output's batch dim is then the input's, which the explainer's outputs
    and a sampling method's held inputs go by."""
    x, ids, table = node.outputs[0], lookup_input(node), node.inputs[0].values
    if ids.shape is None:
        raise UnsupportedError(f"input '{ids.name}' declares no shape; the explainer needs at least its rank")
    declared = list(ids.shape) + list(table.shape[1:])
    if x.shape is None:
        x.shape = declared
    elif len(x.shape) == len(declared):
        x.shape = [own if isinstance(own, (int, np.integer)) else d for own, d in zip(x.shape, declared)]
    x.dtype = x.dtype or table.dtype
    return x


def _check_float_input(t: gs.Tensor):
    from .backward import dtype_name
    if dtype_name(t.dtype) != "float32":
        raise UnsupportedError(f"input '{t.name}' is {dtype_name(t.dtype)}; only float32 models are supported")
    if t.shape is None:
        raise UnsupportedError(f"input '{t.name}' declares no shape; the explainer needs at least its rank")


def _named(graph: gs.Graph, name: str) -> gs.Tensor:
    """The tensor `wrt` names: a float input, or the lookup of an int input, of a table or with that output."""
    from .backward import FLOAT_TYPES, dtype_name
    lookups = embedding_lookups(graph)
    for t in graph.inputs:
        if t.name == name and dtype_name(t.dtype) in FLOAT_TYPES:
            _check_float_input(t)
            return t
    for node in lookups:
        if name in (lookup_input(node).name, node.inputs[0].name, node.outputs[0].name):
            return _output(node)
    floats = [t.name for t in graph.inputs if dtype_name(t.dtype) in FLOAT_TYPES]
    choices = [f"float inputs: {', '.join(floats)}"] if floats else []
    if lookups:
        choices.append("embedding lookups (int input / table / output): " + "; ".join(
            f"{lookup_input(n).name} / {n.inputs[0].name} / {n.outputs[0].name}" for n in lookups))
    raise NnxplainError(f"wrt '{name}' names no float input and no embedding lookup of the model "
                        f"({'; '.join(choices) or 'it has neither'})")
