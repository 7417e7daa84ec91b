"""The portable normal form of an emitted graph, and the compile-time check that holds it.

ONNX allows several spellings of one computation; some ONNX engines handle only one of them, or
compute a wrong result on another (see the README's portability table). Every explainer nnxplain
writes is put into this form at export (`normalize`) and then checked (`violations`, raised by
`check` as an internal error, so a future rule cannot regress it):

1. **No empty optional inputs.** Trailing empty inputs are dropped (`Conv(x, W, "")` becomes
   `Conv(x, W)`, `Gemm(A, B, "")` becomes `Gemm(A, B)`); an empty input followed by a given one gets
   its default value as a constant (Clip's bounds, Pad's constant value, Slice's axes and steps,
   Resize's roi and scales as empty tensors).
2. **One meaning per constant.** Every initializer is read by nodes of one op type, at one input
   position, with the same attributes. A weight that the forward pass reads as a Conv weight and
   the backward pass as a ConvTranspose weight, or that a forward Gemm reads with transB=1 and a
   backward Gemm with transB=0, becomes one constant per kind of reader (OpenVINO computes wrong
   results otherwise): each reader kind gets its own copy here. (Weights the backward pass needs
   in another form are constants of their own anyway, computed when the graph is compiled: the
   flipped Conv weights, MatMul's transposed ones, the LRP rules' sign-split and modified ones.)
   Before that, equal constants are merged and then equal nodes (same op, attributes and inputs):
   methods compiled together that share a backward pass (gradient, input_t_gradient,
   gradient.baseline) compute it once.
3. **No intermediate shape symbols.** The graph keeps no value_info (engines infer intermediate
   shapes themselves; a stored symbol such as the sampling methods' samples x batch dimension, or
   a symbolic batch where the caller fixes the input shape, is what some engines cannot unify).
   Graph outputs name only symbols that the graph inputs define.
   ONNX Runtime then infers them itself, without data propagation: a dim it cannot name (a Reshape
   to a run-time Shape(x)) makes its memory planner take time quadratic in the depth to load the
   graph, so the rules reshape and broadcast to constant targets where the forward graph knows
   the dims (Emitter.reshape_like; tests/test_inferable_shapes.py). `store_shapes` adds them,
   naming the inputs' symbols: nnxplain's own sessions do that in memory, and `nnxplain compile
   --store-shapes` writes them into the file for ONNX Runtime deployments (such a file is not for
   an engine that fixes the input shape first: tract then fails to unify the stored batch symbol
   with the fixed batch).
4. **0-D scalars where the operator allows either.** OneHot's depth, Pad's constant value and
   Clip's bounds are 0-D tensors.
"""
from __future__ import annotations

import collections
import hashlib

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import NnxplainError

# op -> {input index: default value as a function of the node and the known constants}, for
# optional inputs that may be followed by a given one
_MIDDLE_DEFAULTS = {
    "Clip": {1: lambda node, dtype, consts: np.array(np.finfo(dtype).min, dtype),
             2: lambda node, dtype, consts: np.array(np.finfo(dtype).max, dtype)},
    "Pad": {2: lambda node, dtype, consts: np.array(0, dtype)},
    "Resize": {1: lambda node, dtype, consts: np.zeros(0, np.float32),   # roi: tf_crop_and_resize only
               2: lambda node, dtype, consts: np.zeros(0, np.float32)},  # scales, where sizes are given
    "Slice": {3: lambda node, dtype, consts: np.arange(len(consts[node.input[1]]), dtype=np.int64),
              4: lambda node, dtype, consts: np.ones(len(consts[node.input[1]]), dtype=np.int64)},
}
# op -> input indices that must be 0-D (the operator also accepts a one-element 1-D tensor there)
SCALAR_INPUTS = {"OneHot": (1,), "Pad": (2,), "Clip": (1, 2)}


def normalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Put `model` into the portable normal form (in place; returned)."""
    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    taken = {t.name for t in graph.initializer} | {n for node in graph.node for n in node.output} | \
        {t.name for t in graph.input}
    new_inits: list[onnx.TensorProto] = []

    def fresh(base: str) -> str:
        k = 0
        while f"{base}/nnx_{k}" in taken:
            k += 1
        taken.add(f"{base}/nnx_{k}")
        return f"{base}/nnx_{k}"

    dtypes = _float_types(model)
    for node in graph.node:
        while node.input and node.input[-1] == "":
            del node.input[-1]
        for i, name in enumerate(node.input):
            if name == "" and i in _MIDDLE_DEFAULTS.get(node.op_type, {}):
                dtype = dtypes.get(node.input[0], np.float32)
                arrays = {k: numpy_helper.to_array(v) for k, v in consts.items() if k in node.input}
                value = _MIDDLE_DEFAULTS[node.op_type][i](node, dtype, arrays)
                t = numpy_helper.from_array(value, fresh(f"{node.name or node.op_type}/default_{i}"))
                new_inits.append(t)
                consts[t.name] = t
                node.input[i] = t.name
        for i in SCALAR_INPUTS.get(node.op_type, ()):
            name = node.input[i] if i < len(node.input) else ""
            if name in consts and list(consts[name].dims) == [1]:
                t = numpy_helper.from_array(numpy_helper.to_array(consts[name]).reshape(()), fresh(name))
                new_inits.append(t)
                consts[t.name] = t
                node.input[i] = t.name
    graph.initializer.extend(new_inits)
    _merge_equal_constants(graph)
    _merge_equal_nodes(graph)
    _one_meaning_per_constant(graph, fresh)
    _drop_unused_initializers(graph)
    del graph.value_info[:]
    output_symbols(graph)
    return model


def _float_types(model: onnx.ModelProto) -> dict:
    known = {}
    for v in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type:
            known[v.name] = onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
    for t in model.graph.initializer:
        known[t.name] = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
    return known


def meaning(node: onnx.NodeProto, index: int) -> tuple:
    """What a node does with its input `index`: op type, domain, position and attributes."""
    return node.op_type, node.domain, index, _attributes(node)


def _attributes(node: onnx.NodeProto) -> tuple:
    """A node's attributes as a comparable key; tensor attributes by type, shape and contents (not name)."""
    out = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.TENSOR:
            t = onnx.TensorProto()
            t.CopyFrom(a.t)
            t.ClearField("name")
            out.append((a.name, t.SerializeToString(deterministic=True)))
        else:
            out.append((a.name, a.SerializeToString(deterministic=True)))
    return tuple(sorted(out))


def _merge_equal_constants(graph):
    """Initializers with equal type, shape and bytes become one (methods compiled together emit the
    same transposed weights each); the readers of the others read the first."""
    outputs = {o.name for o in graph.output} | {i.name for i in graph.input}  # (old models list weights as inputs)
    first, rename = {}, {}
    tensors = {t.name: t for t in graph.initializer}
    for t in graph.initializer:
        if t.name in outputs or t.data_location == onnx.TensorProto.EXTERNAL:
            continue
        key = (t.data_type, tuple(t.dims), hashlib.sha256(_bytes(t)).digest())  # a digest: no copy of every weight
        if key in first and _bytes(tensors[first[key]]) == _bytes(t):
            rename[t.name] = first[key]
        else:
            first.setdefault(key, t.name)
    if not rename:
        return
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]


def _bytes(t: onnx.TensorProto) -> bytes:
    return t.raw_data if t.HasField("raw_data") else numpy_helper.to_array(t).tobytes()


def _merge_equal_nodes(graph):
    """Common subexpressions: a node with the op, attributes and inputs of an earlier one is dropped
    and its readers read the earlier one's outputs (methods compiled together that share a backward
    pass, such as gradient and input_t_gradient, then compute it once). Nodes writing graph outputs
    and random ops stay."""
    outputs = {o.name for o in graph.output}
    seen, rename, keep = {}, {}, []
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        if node.op_type.startswith("Random") or any(o in outputs for o in node.output):
            keep.append(node)
            continue
        key = (node.op_type, node.domain, tuple(node.input), len(node.output),
               _attributes(node))
        if key in seen:
            rename.update(zip(node.output, seen[key].output))
        else:
            seen[key] = node
            keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


def _one_meaning_per_constant(graph, fresh):
    inits = {t.name: t for t in graph.initializer}
    readers = collections.defaultdict(lambda: collections.defaultdict(list))  # name -> meaning -> [(node, i)]
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in inits:
                readers[name][meaning(node, i)].append((node, i))
    outputs = {o.name for o in graph.output}
    for name, by_meaning in readers.items():
        kinds = list(by_meaning.values())
        for uses in kinds[0 if name in outputs else 1:]:  # the first kind keeps the name
            copy = graph.initializer.add()  # (extend would copy each copy once more)
            copy.CopyFrom(inits[name])
            copy.name = fresh(name)
            for node, i in uses:
                node.input[i] = copy.name


def _drop_unused_initializers(graph):
    used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output} | {i.name for i in graph.input}
    for i in reversed(range(len(graph.initializer))):  # in place: extend would copy every weight kept
        if graph.initializer[i].name not in used:
            del graph.initializer[i]


def store_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Store the shape of every intermediate tensor as shape inference (with data propagation) gives
    it, dims named only by the inputs' symbols (in place; returned). See rule 3 for why and when."""
    from .load import infer_shapes
    infer_shapes(model, data_prop=True)
    output_symbols(model.graph, model.graph.value_info)
    return model


def output_symbols(graph, values=()):
    """Output dims named by a symbol no input defines become unnamed dims."""
    defined = {d.dim_param for v in graph.input for d in v.type.tensor_type.shape.dim if d.dim_param}
    for out in list(graph.output) + list(values):
        for d in out.type.tensor_type.shape.dim:
            if d.dim_param and d.dim_param not in defined:
                d.ClearField("dim_param")


def violations(model: onnx.ModelProto, shapes: dict | None = None) -> list[str]:
    """What keeps `model` from the normal form, one line per problem (empty: it is in the form).
    `shapes`: {tensor name: rank} from shape inference, to check the 0-D inputs of computed tensors."""
    graph = model.graph
    problems = []
    inits = {t.name: t for t in graph.initializer}
    kinds = collections.defaultdict(set)
    for node in graph.node:
        where = f"node '{node.name}' ({node.op_type})"
        if "" in node.input:
            problems.append(f"{where} has an empty optional input at position {list(node.input).index('')}")
        for i, name in enumerate(node.input):
            if name in inits:
                kinds[name].add(meaning(node, i))
        for i in SCALAR_INPUTS.get(node.op_type, ()):
            name = node.input[i] if i < len(node.input) else ""
            rank = len(inits[name].dims) if name in inits else (shapes or {}).get(name)
            if name and rank not in (None, 0):
                problems.append(f"{where} input {i} ('{name}') has rank {rank}; it must be a 0-D scalar")
    for name, seen in kinds.items():
        if len(seen) > 1:
            problems.append(f"initializer '{name}' is read with {len(seen)} meanings ("
                            + "; ".join(f"{op} input {i} {dict(attrs)}" for op, _, i, attrs in sorted(seen)) + ")")
    if graph.value_info:
        problems.append(f"the graph stores value_info for {len(graph.value_info)} tensors")
    defined = {d.dim_param for v in graph.input for d in v.type.tensor_type.shape.dim if d.dim_param}
    for out in graph.output:
        for d in out.type.tensor_type.shape.dim:
            if d.dim_param and d.dim_param not in defined:
                problems.append(f"output '{out.name}' names dimension '{d.dim_param}', which no input defines")
    return problems


def check(model: onnx.ModelProto, shapes: dict | None = None):
    """Raise an internal error naming what keeps the model from the portable normal form."""
    problems = violations(model, shapes)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise NnxplainError("internal error: the emitted graph is not in the portable normal form: "
                            + "; ".join(problems[:3]) + more)
