"""Writing explainers to disk, and handing them to ONNX Runtime, at any size.

A protobuf message cannot exceed 2 GiB, so an explainer whose weights (the model's own plus the
modified copies that some rules need) pass that limit cannot be one .onnx file. Above the limit, or
when asked, the weights go to `<file>.data` beside the .onnx (ONNX external data, as torch's dynamo
exporter writes them); ONNX Runtime, onnx.load and every other engine that reads external data load
the pair.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import NnxplainError
from .load import without_initializers
from .runtime import write_atomic, write_files

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
    former only when the model is too large for one file. Nothing is half-written: the .onnx and its
    .data are written both or neither (runtime.write_files). `model` is not changed."""
    path = os.fspath(path)
    if external_data is None:
        external_data = needs_external_data(model)
    if not external_data:
        if needs_external_data(model):
            raise NnxplainError(f"{path}: the explainer holds {weight_bytes(model) / 2**30:.1f} GiB of weights, more "
                                f"than one ONNX file can hold (2 GiB); write it with external data")
        write_atomic(path, model.SerializeToString())
        return [path]
    light, parts = _external_layout(model, os.path.basename(path) + ".data")
    write_files({path + ".data": lambda f: _write_parts(f, parts), path: light.SerializeToString()})
    return [path, path + ".data"]


def _external_layout(model: onnx.ModelProto, location: str) -> tuple[onnx.ModelProto, list]:
    """A copy of `model` whose large initializers refer to `location`, and (offset, tensor) of each
    of them in that file: every tensor starts at a multiple of ALIGNMENT."""
    light = without_initializers(model)
    parts, end = [], 0
    for t in model.graph.initializer:
        size = tensor_nbytes(t)
        if size < EXTERNAL_MIN_BYTES:
            light.graph.initializer.append(t)
            continue
        offset = end + -end % ALIGNMENT
        parts.append((offset, t))
        end = offset + size
        ref = light.graph.initializer.add()
        ref.name, ref.data_type = t.name, t.data_type
        ref.dims.extend(t.dims)
        ref.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(size))):
            entry = ref.external_data.add()
            entry.key, entry.value = key, value
    return light, parts


def _write_parts(f, parts: list):
    """The tensors' bytes at their offsets (zeros between them)."""
    for offset, t in parts:
        f.write(b"\0" * (offset - f.tell()))
        f.write(t.raw_data if t.HasField("raw_data") else numpy_helper.to_array(t).tobytes())


def session_source(model: onnx.ModelProto, folder: str) -> str | bytes:
    """What to hand to onnxruntime.InferenceSession: the serialized model, or, above the protobuf
    limit, the path of a copy written with external data into `folder` (a temporary folder the
    caller removes once the session is made)."""
    if not needs_external_data(model):
        return model.SerializeToString()
    return save(model, os.path.join(folder, "explainer.onnx"), external_data=True)[0]
