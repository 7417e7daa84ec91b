"""Writing explainers to disk, and handing them to ONNX Runtime, at any size.

A protobuf message cannot exceed 2 GiB, so an explainer whose weights (the model's own plus the
modified copies that some rules need) pass that limit cannot be one .onnx file. Above the limit, or
when asked, the weights go to `<file>.data` beside the .onnx (ONNX external data, as torch's dynamo
exporter writes them); ONNX Runtime, onnx.load and every other engine that reads external data load
the pair.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import NnxplainError
from .load import _copy_fields
from .runtime import write_atomic

# A model's serialized size must stay below 2 GiB; leave room for the graph beside the weights.
INLINE_LIMIT = 2**31 - 2**27
# Tensors at least this large go to the .data file (small ones stay inline, as onnx.save does).
EXTERNAL_MIN_BYTES = 1024
# Each tensor starts at a multiple of this in the .data file, so that an engine can map it in place.
ALIGNMENT = 4096


def tensor_nbytes(t: onnx.TensorProto) -> int:
    if t.HasField("raw_data"):
        return len(t.raw_data)
    count = int(np.prod(t.dims, dtype=np.int64)) if len(t.dims) else 1
    return count * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def weight_bytes(model: onnx.ModelProto) -> int:
    return sum(tensor_nbytes(t) for t in model.graph.initializer)


def needs_external_data(model: onnx.ModelProto) -> bool:
    return weight_bytes(model) > INLINE_LIMIT


def save(model: onnx.ModelProto, path: str | os.PathLike, external_data: bool | None = None) -> list[str]:
    """Write `model` to `path`; return the files written. external_data: True puts the weights into
    `<path>.data` beside it, False keeps one file (an error above 2 GiB), None (default) does the
    former only when the model is too large for one file. Nothing is half-written: each file is
    written under a temporary name and renamed. `model` is not changed."""
    path = os.fspath(path)
    if external_data is None:
        external_data = needs_external_data(model)
    if not external_data:
        if needs_external_data(model):
            raise NnxplainError(f"{path}: the explainer holds {weight_bytes(model) / 2**30:.1f} GiB of weights, more "
                                f"than one ONNX file can hold (2 GiB); write it with external data")
        write_atomic(path, model.SerializeToString())
        return [path]
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise NnxplainError(f"{path}: the folder {folder} does not exist")
    data_name = os.path.basename(path) + ".data"
    fd, data_tmp = tempfile.mkstemp(dir=folder, prefix=".nnxplain-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as data:
            light = _with_external_weights(model, data, data_name)
        write_atomic(path, light.SerializeToString())
        os.replace(data_tmp, os.path.join(folder, data_name))
        os.chmod(os.path.join(folder, data_name), os.stat(path).st_mode & 0o777)
    except BaseException:
        if os.path.exists(data_tmp):
            os.unlink(data_tmp)
        raise
    return [path, os.path.join(folder, data_name)]


def _with_external_weights(model: onnx.ModelProto, data, location: str) -> onnx.ModelProto:
    """A copy of `model` whose large initializers refer to `location`, their bytes written to `data`."""
    light = onnx.ModelProto()
    _copy_fields(model, light, skip="graph")
    _copy_fields(model.graph, light.graph, skip="initializer")
    for t in model.graph.initializer:
        if tensor_nbytes(t) < EXTERNAL_MIN_BYTES:
            light.graph.initializer.append(t)
            continue
        raw = t.raw_data if t.HasField("raw_data") else numpy_helper.to_array(t).tobytes()
        offset = data.tell()
        padding = -offset % ALIGNMENT
        data.write(b"\0" * padding)
        data.write(raw)
        ref = light.graph.initializer.add()
        ref.name, ref.data_type = t.name, t.data_type
        ref.dims.extend(t.dims)
        ref.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", str(offset + padding)), ("length", str(len(raw)))):
            entry = ref.external_data.add()
            entry.key, entry.value = key, value
    return light


def session_source(model: onnx.ModelProto, folder: str) -> str | bytes:
    """What to hand to onnxruntime.InferenceSession: the serialized model, or, above the protobuf
    limit, the path of a copy written with external data into `folder` (a temporary folder the
    caller removes once the session is made)."""
    if not needs_external_data(model):
        return model.SerializeToString()
    return save(model, os.path.join(folder, "explainer.onnx"), external_data=True)[0]
