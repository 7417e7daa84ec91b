"""Load an ONNX model and make sure it is one we can work with, failing with one clear message."""
from __future__ import annotations

import os

import onnx
from onnx import version_converter

from .errors import NnxplainError, UnsupportedError

# Opsets we accept from users. Models below EMIT_OPSET are converted up to it: the backward graph
# uses ScatterElements(reduction="add") (opset 16) and input-style axes (opset 13).
MIN_OPSET, MAX_OPSET = 11, 21
EMIT_OPSET = 17
# ONNX Runtime 1.31 loads IR <= 13; opset 17..21 needs IR >= 8.
IR_VERSION = 10


def load(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """Read, check, convert to a usable opset and shape-infer a model (path or ModelProto)."""
    if isinstance(model, onnx.ModelProto):
        proto, where = onnx.ModelProto(), "model"
        proto.CopyFrom(model)  # never modify the caller's model
    else:
        where = os.fspath(model)
        if not os.path.exists(where):
            raise NnxplainError(f"{where}: no such file")
        if not os.path.isfile(where):
            raise NnxplainError(f"{where}: not a regular file (a folder, a pipe or a device), not an ONNX model")
        if os.path.getsize(where) == 0:
            raise NnxplainError(f"{where}: the file is empty, not an ONNX model")
        try:
            proto = onnx.load(where)  # external data is read from beside the file
        except Exception as exc:  # protobuf's DecodeError, a missing .data file, ...
            raise NnxplainError(f"{where}: not a readable ONNX model ({first_line(exc)})") from None
    if not proto.graph.node:
        raise NnxplainError(f"{where}: the model has no nodes")

    opset = _default_opset(proto, where)
    foreign = sorted({n.domain for n in proto.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        node = next(n for n in proto.graph.node if n.domain in foreign)
        raise UnsupportedError(
            f"{where}: node '{node.name}' uses op {node.op_type} from domain '{node.domain}'; "
            "only the default ONNX domain is supported")
    _check_wiring(proto, where)
    _check_initializers(proto, where)
    _name_unknown_input_dims(proto)
    _fill_output_shapes(proto)
    try:
        check_light(proto)
    except Exception as exc:
        raise NnxplainError(f"{where}: invalid ONNX model: {first_line(exc)}") from None

    if opset < EMIT_OPSET:
        try:
            proto = version_converter.convert_version(proto, EMIT_OPSET)
        except Exception as exc:
            raise NnxplainError(
                f"{where}: could not convert opset {opset} to {EMIT_OPSET}: {first_line(exc)}") from None
    proto.ir_version = min(proto.ir_version, IR_VERSION) if opset >= EMIT_OPSET else IR_VERSION
    try:
        return infer_shapes(proto, data_prop=True)
    except Exception as exc:
        raise NnxplainError(f"{where}: shape inference failed: {first_line(exc)}") from None


def _check_wiring(proto: onnx.ModelProto, where: str):
    """Name a tensor that nothing provides (a missing initializer, a dangling input) or a cycle, and
    put nodes written out of order into order (the checker would only say 'not topologically sorted')."""
    graph = proto.graph
    available = {t.name for t in graph.input} | {t.name for t in graph.initializer} | {""}
    available |= {t.values.name for t in graph.sparse_initializer}
    produced = {name: node for node in graph.node for name in node.output if name}
    for node in graph.node:
        for name in node.input:
            if name not in available and name not in produced:
                raise NnxplainError(f"{where}: node '{node.name}' ({node.op_type}) reads '{name}', which no node, "
                                    "graph input or initializer provides (a missing initializer or a dangling input)")
    for out in graph.output:
        if out.name not in available and out.name not in produced:
            raise NnxplainError(f"{where}: graph output '{out.name}' is produced by no node")
    seen = set(available)
    for node in graph.node:
        if not all(i in seen for i in node.input):
            break
        seen.update(node.output)
    else:
        return  # already in order: the usual case
    # Kahn's order over the nodes; what is left over lies on a cycle
    waiting = {id(n): sum(1 for i in set(n.input) if i not in available) for n in graph.node}
    readers: dict[str, list] = {}
    for n in graph.node:
        for i in set(n.input):
            if i not in available:
                readers.setdefault(i, []).append(n)
    ready = [n for n in graph.node if waiting[id(n)] == 0]
    order = []
    while ready:
        node = ready.pop(0)
        order.append(node)
        for name in node.output:
            for reader in readers.get(name, []):
                waiting[id(reader)] -= 1
                if waiting[id(reader)] == 0:
                    ready.append(reader)
    if len(order) < len(graph.node):
        stuck = next(n for n in graph.node if waiting[id(n)] > 0)
        raise NnxplainError(f"{where}: the graph has a cycle through node '{stuck.name}' ({stuck.op_type})")
    nodes = [onnx.NodeProto() for _ in order]
    for new, old in zip(nodes, order):
        new.CopyFrom(old)
    del graph.node[:]
    graph.node.extend(nodes)


# The field a tensor's values are stored in when not as raw bytes, by data type (onnx's TensorProto docs).
_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def _check_initializers(proto: onnx.ModelProto, where: str):
    """Every initializer holds as many values as its shape says (a weight whose data is short would
    fail deep inside, or be read past its end)."""
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            continue  # not loaded (a ModelProto handed over without its data): onnx reports it
        count = 1
        for d in t.dims:
            count *= d
        if any(d < 0 for d in t.dims):
            raise NnxplainError(f"{where}: initializer '{t.name}' has a negative dimension {list(t.dims)}")
        if t.HasField("raw_data"):
            try:
                size = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
            except (KeyError, TypeError, ValueError):
                continue  # a type without a numpy twin: the checker judges it
            if onnx.helper.tensor_dtype_to_string(t.data_type).endswith(("INT4", "E2M1", "INT2")):
                continue  # 4- and 2-bit types pack several values in a byte
            held = len(t.raw_data)
            if held != count * size:
                raise NnxplainError(f"{where}: initializer '{t.name}' has shape {list(t.dims)} ({count * size} bytes) "
                                    f"but holds {held} bytes")
        else:
            held = sum(len(getattr(t, f)) for f in _TYPED_FIELDS)
            if held != count and not (t.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128)
                                               and held == 2 * count):
                raise NnxplainError(f"{where}: initializer '{t.name}' has shape {list(t.dims)} ({count} values) but "
                                    f"holds {held}")


def _name_unknown_input_dims(proto: onnx.ModelProto):
    """Some exporters (paddle2onnx) declare a dynamic input dim as -1, or name every dynamic dim '?':
    -1 is no size, and one name for several dims says they are equal, which shape inference would
    then assume (a '?' height and width of one image). Each such dim gets a name of its own."""
    for value in proto.graph.input:
        for j, dim in enumerate(value.type.tensor_type.shape.dim):
            if (dim.HasField("dim_value") and dim.dim_value < 0) or dim.dim_param == "?":
                dim.dim_param = f"{value.name}_dim{j}"


def _fill_output_shapes(proto: onnx.ModelProto):
    """onnx >= 1.23's checker rejects outputs declared without a shape, which older exporters write:
    take the shape that inference finds for them (the checker then judges the rest)."""
    missing = [o for o in proto.graph.output if not o.type.tensor_type.HasField("shape")]
    if not missing:
        return
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:
        return  # the checker will say what is wrong
    known = {v.name: v.type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for out in missing:
        if out.name in known and known[out.name].tensor_type.HasField("shape"):
            out.type.CopyFrom(known[out.name])


def _default_opset(proto: onnx.ModelProto, where: str) -> int:
    versions = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise NnxplainError(f"{where}: the model imports no default-domain opset")
    opset = versions[0]
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise NnxplainError(f"{where}: opset {opset} is not supported (supported: {MIN_OPSET} to {MAX_OPSET})")
    return opset


def first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if len(lines) == 1 else " ".join(lines[:3])


# Initializers above this size stay out of the copies that shape inference and the checker serialize:
# they see a graph input of the same type and shape instead (a ResNet-50's 100 MB of weights would
# otherwise be serialized and parsed again at every check).
LIGHT_BYTES = 4096


def infer_shapes(proto: onnx.ModelProto, data_prop: bool = False, check: bool = False,
                 full_check: bool = False, infer: bool = True) -> onnx.ModelProto:
    """onnx.shape_inference.infer_shapes (strict) and, with check / full_check, onnx.checker, run on
    a copy without the large initializers; the inferred value_info is put into `proto` (returned)."""
    graph = proto.graph
    big = {t.name for t in graph.initializer if _nbytes(t) > LIGHT_BYTES}
    light = without_initializers(proto)
    g = light.graph
    g.initializer.extend(t for t in graph.initializer if t.name not in big)
    declared = {t.name for t in g.input}
    g.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                   for t in graph.initializer if t.name in big and t.name not in declared)
    if check or full_check:
        onnx.checker.check_model(light, full_check=full_check)
    if not infer:
        return proto
    inferred = onnx.shape_inference.infer_shapes(light, strict_mode=True, data_prop=data_prop)
    del graph.value_info[:]
    graph.value_info.extend(inferred.graph.value_info)
    outputs = {o.name: o for o in inferred.graph.output}
    for out in graph.output:
        out.type.CopyFrom(outputs[out.name].type)
    return proto


def without_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model with everything but the graph's initializers (which a caller adds back
    as it needs: some, all as references, or none), so that no weight is copied."""
    light = onnx.ModelProto()
    _copy_fields(proto, light, skip="graph")
    _copy_fields(proto.graph, light.graph, skip="initializer")
    return light


def _copy_fields(source, target, skip: str):
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        if (field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED):
            getattr(target, field.name).extend(value)
        elif field.message_type:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)


def _nbytes(t: onnx.TensorProto) -> int:
    count = 1
    for d in t.dims:
        count *= d
    return count * 8  # an upper bound on the element size is enough to tell large from small


def check_light(proto: onnx.ModelProto, full_check: bool = False):
    """onnx.checker.check_model on a copy without the large initializers (see infer_shapes)."""
    infer_shapes(proto, check=True, full_check=full_check, infer=False)
