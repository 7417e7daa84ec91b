"""Running compiled explainers in ONNX Runtime: CUDA where it works, CPU otherwise."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

from .errors import NnxplainError
from .load import IR_VERSION

PREFERRED = ("CUDAExecutionProvider", "CPUExecutionProvider")
QUIET = 4  # the sessions' log severity: fatal only; errors that matter raise (and become one line)
_cuda_works: bool | None = None  # whether ONNX Runtime's CUDA provider loads here (found out once)


def options(severity: int = QUIET) -> ort.SessionOptions:
    """Session options that keep this session's ONNX Runtime log (graph-optimizer notes and the like)
    off the user's stderr. Only the session's severity is set, never the process-wide default
    logger's: the user's own sessions log as they always did."""
    opts = ort.SessionOptions()
    opts.log_severity_level = severity
    return opts


def session(model: onnx.ModelProto | bytes | str, providers=None) -> ort.InferenceSession:
    """An inference session on the best available provider. `session.get_providers()` tells which
    providers really loaded: the available-providers list names CUDA even where it cannot load.
    CUDA is asked for only where it loads (see cuda_works), so ONNX Runtime logs no failure to load
    it; where a GPU is present and it does not load, one warning says so and what to install."""
    available = ort.get_available_providers()
    wanted = [p for p in (providers or PREFERRED) if p in available]
    if "CUDAExecutionProvider" in wanted and not cuda_works():
        wanted.remove("CUDAExecutionProvider")
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    try:
        return ort.InferenceSession(data, options(), providers=wanted or ["CPUExecutionProvider"])
    except Exception as exc:
        raise NnxplainError(f"ONNX Runtime could not load the model: {str(exc).strip().splitlines()[0]}") from None


def gpu_present() -> bool:
    """Whether an NVIDIA GPU's driver is visible (Linux: /proc/driver/nvidia, /dev/nvidia0..; WSL: /dev/dxg)."""
    import glob
    return (os.path.exists("/proc/driver/nvidia/version") or bool(glob.glob("/dev/nvidia[0-9]*"))
            or os.path.exists("/dev/dxg"))


def cuda_works() -> bool:
    """Whether ONNX Runtime's CUDA provider loads on this machine, found out once per process: not
    where no GPU is visible; else by one small session with CUDA, whose log (ONNX Runtime writes a
    failure to load a provider to its process-wide default logger, which no session option silences)
    is caught from stderr and turned into one warning that names the missing library."""
    global _cuda_works
    if _cuda_works is None:
        _cuda_works = gpu_present() and _probe_cuda()
    return _cuda_works


def _probe_cuda() -> bool:
    import re
    import sys
    import warnings
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    import importlib.util
    if importlib.util.find_spec("nvidia") is not None and hasattr(ort, "preload_dlls"):
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):  # CUDA / cuDNN from pip (onnxruntime-gpu[cuda,cudnn])
            ort.preload_dlls()
    with tempfile.TemporaryFile() as caught:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            loaded = "CUDAExecutionProvider" in ort.InferenceSession(
                probe.SerializeToString(), options(), providers=list(PREFERRED)).get_providers()
        except Exception:
            loaded = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        log = re.sub(r"\x1b\[[0-9;]*m", "", caught.read().decode(errors="replace"))
    if not loaded:
        reason = re.search(r"with error: ([^\n]+)", log) or re.search(r"\[E:onnxruntime[^\]]*\] ([^\n]+)", log)
        why = f" ({reason.group(1).strip()})" if reason else ""
        warnings.warn(f"running on CPU: this machine has an NVIDIA GPU, but ONNX Runtime {ort.__version__}'s CUDA "
                      f"provider did not load{why}; it needs the CUDA and cuDNN libraries it was built for (`pip "
                      f"install onnxruntime-gpu[cuda,cudnn]`, or see https://onnxruntime.ai/docs/execution-providers/"
                      f"CUDA-ExecutionProvider.html#requirements)", RuntimeWarning, stacklevel=4)
    return loaded


class quiet_sessions:
    """Inside the block, ONNX Runtime sessions created without options (onnx-graphsurgeon's constant
    folding creates its own) get `options()`: their optimizer notes ("UnsqueezeElimination cannot
    remove node ...") stay off the user's stderr. The default logger is not touched."""

    def __enter__(self):
        self.original = ort.InferenceSession
        original = self.original

        class Quiet(original):
            def __init__(self, path_or_bytes, sess_options=None, *args, **kwargs):
                super().__init__(path_or_bytes, sess_options if sess_options is not None else options(), *args,
                                 **kwargs)

        ort.InferenceSession = Quiet
        return self

    def __exit__(self, *exc):
        ort.InferenceSession = self.original
        return False


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
