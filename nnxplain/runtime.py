"""Running compiled explainers in ONNX Runtime: CUDA where it works, CPU otherwise."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

from .errors import NnxplainError

PREFERRED = ("CUDAExecutionProvider", "CPUExecutionProvider")


def session(model: onnx.ModelProto | bytes | str, providers=None) -> ort.InferenceSession:
    """An inference session on the best available provider. `session.get_providers()` tells which
    providers really loaded: the available-providers list names CUDA even where it cannot load."""
    available = ort.get_available_providers()
    wanted = [p for p in (providers or PREFERRED) if p in available] or ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    # A CUDA provider that cannot load logs an error and falls back to CPU: keep that off the
    # user's screen (real failures still raise).
    options.log_severity_level = 4
    ort.set_default_logger_severity(4)
    with tempfile.TemporaryDirectory(prefix="nnxplain-") as folder:
        if isinstance(model, onnx.ModelProto):
            from .modelfile import session_source  # (modelfile writes files with write_atomic, below)
            model = session_source(model, folder)  # bytes, or a path with external data above 2 GiB
        try:
            return ort.InferenceSession(model, options, providers=wanted)
        except Exception as exc:
            raise NnxplainError(f"ONNX Runtime could not load the model: {str(exc).strip().splitlines()[0]}") from None


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def check_feed(meta, array, argument: str | None = None) -> np.ndarray:
    """`array` converted for input `meta` (an ORT NodeArg), or a clear error naming the input (and
    the argument the array came from)."""
    array = np.asarray(array)
    where = f"{argument}: " if argument else ""
    want = _ORT_TYPES.get(meta.type)
    if want is not None and array.dtype != want:
        same_kind = np.dtype(want).kind == array.dtype.kind or (np.dtype(want).kind == "i" and array.dtype.kind == "u")
        if not same_kind:
            raise NnxplainError(f"{where}input '{meta.name}' expects {np.dtype(want).name} data, got {array.dtype.name}")
        array = array.astype(want)
    dims = meta.shape
    if len(dims) != array.ndim or any(isinstance(d, int) and d != n for d, n in zip(dims, array.shape)):
        shown = ["batch" if not isinstance(d, int) else d for d in dims]
        raise NnxplainError(f"{where}input '{meta.name}' expects shape {shown}, got {list(array.shape)}")
    return array


def write_atomic(path: str | os.PathLike, data: bytes):
    """Write via a temporary file in the same folder and rename, so a failure leaves no partial file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise NnxplainError(f"{path}: the folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".nnxplain-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_array(path: str | os.PathLike) -> np.ndarray:
    """A batch from .npy, or from .npz (the array `x`, or its only array)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise NnxplainError(f"{path}: not a readable .npy/.npz file ({exc})") from None
    if isinstance(data, np.ndarray):
        return data
    keys = list(data.keys())
    if "x" in keys:
        return data["x"]
    if len(keys) == 1:
        return data[keys[0]]
    raise NnxplainError(f"{path}: holds arrays {', '.join(keys)}; name the input array 'x'")
