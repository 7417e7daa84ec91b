"""Running compiled explainers in ONNX Runtime: CUDA where it works, CPU otherwise."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

from .errors import NnxplainError
from .load import IR_VERSION, first_line

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


def session(model: onnx.ModelProto | bytes | str, providers=None, threads: int = 0) -> ort.InferenceSession:
    """An inference session on the best available provider. `session.get_providers()` tells which
    providers really loaded: the available-providers list names CUDA even where it cannot load.
    CUDA is asked for only where it loads (see cuda_works), so ONNX Runtime logs no failure to load
    it; where a GPU is present and it does not load, one warning says so and what to install.
    `threads`: ONNX Runtime's intra-op threads (0: its own choice, one per core)."""
    available = ort.get_available_providers()
    wanted = [p for p in (providers or PREFERRED) if p in available]
    if "CUDAExecutionProvider" in wanted and not cuda_works():
        wanted.remove("CUDAExecutionProvider")
    opts = options()
    opts.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory(prefix="nnxplain-") as folder:
        if isinstance(model, onnx.ModelProto):
            model = _with_shapes(model, folder)
        try:
            return ort.InferenceSession(model, opts, providers=wanted or ["CPUExecutionProvider"])
        except Exception as exc:
            raise NnxplainError(f"ONNX Runtime could not load the model: {str(exc).strip().splitlines()[0]}") from None


def _with_shapes(model: onnx.ModelProto, folder: str):
    """What ONNX Runtime loads for `model`: its bytes (or a path, with external data above 2 GiB),
    with the intermediate shapes stored while they are serialized (the model is left as it was).
    Without them ONNX Runtime's load time grows with the square of the depth (portable.py, rule 3)."""
    from . import portable
    from .modelfile import session_source  # (modelfile writes files with write_atomic, below)
    if model.graph.value_info:
        return session_source(model, folder)
    output_types = [onnx.TypeProto.FromString(o.type.SerializeToString()) for o in model.graph.output]
    try:
        try:
            portable.store_shapes(model)
        except Exception:  # a model shape inference cannot follow: ONNX Runtime infers what it can itself
            del model.graph.value_info[:]
        return session_source(model, folder)
    finally:
        del model.graph.value_info[:]
        for out, kind in zip(model.graph.output, output_types):
            out.type.CopyFrom(kind)


def run(sess: ort.InferenceSession, outputs, feeds: dict) -> list:
    """sess.run, with a failure inside ONNX Runtime (a model that cannot run on this input, memory)
    as one clear NnxplainError."""
    try:
        return sess.run(outputs, feeds)
    except MemoryError:
        raise
    except Exception as exc:
        text = " ".join(str(exc).split())
        raise NnxplainError(f"ONNX Runtime failed to run the model: {text[:300]}") from None


def nonfinite_samples(x: np.ndarray) -> np.ndarray:
    """bool [batch]: the samples (first axis) that hold a NaN or an infinity."""
    x = np.asarray(x)
    if x.dtype.kind not in "fc" or x.ndim == 0:
        return np.zeros(x.shape[:1], bool)
    return ~np.isfinite(x.reshape(len(x), -1)).all(axis=1) if x.size else np.zeros(len(x), bool)


def warn_nonfinite(x: np.ndarray, what: str = "input"):
    """Warn (NnxplainWarning) with the count of samples holding NaN or inf: the explainer gives them
    NaN explanations."""
    import warnings

    from .errors import NnxplainWarning
    bad = nonfinite_samples(x)
    if bad.any():
        warnings.warn(f"{what}: {int(bad.sum())} of {len(bad)} samples hold NaN or inf (the first: sample "
                      f"{int(np.argmax(bad))}); their explanations are NaN", NnxplainWarning, stacklevel=3)


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
    write_files({path: data})


def write_files(files: dict):
    """Write {path: bytes, or a function that writes into the open binary file} all or nothing,
    in order: each to a temporary file beside its target first, then
    renamed into place; a failure leaves no temporary file, no new file and every old one as it was
    (a write that fails half-way, a read-only folder, a full disk, a directory or a name too long
    for the file system). OSErrors become one clear NnxplainError naming the file."""
    staged, placed, current = [], [], None
    try:
        for current, data in files.items():
            staged.append((_stage(current, data), os.fspath(current)))
        for tmp, path in staged:
            current = path
            existed, backup = os.path.lexists(path), None
            if existed and len(files) > 1:  # the old file, kept to be put back if a later file fails
                try:
                    os.link(path, tmp + ".old")
                    backup = tmp + ".old"
                except OSError:
                    pass
            placed.append((path, existed, backup))
            os.replace(tmp, path)
    except BaseException as exc:
        for path, existed, backup in reversed(placed):
            if backup is not None:
                os.replace(backup, path)
            elif not existed and os.path.lexists(path):
                os.unlink(path)
        for tmp, _ in staged:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise NnxplainError(f"{os.fspath(current)}: cannot write the file ({exc.strerror or exc})") from None
        raise
    for _, _, backup in placed:
        if backup is not None:
            os.unlink(backup)


def check_output_name(path) -> str:
    """`path` if it can name a new file (not empty, not a folder, not too long, in a folder that
    exists), else one clear error: checked before any work whose result it would hold."""
    path = os.fspath(path)
    if not path or path.endswith(os.sep):
        raise NnxplainError(f"'{path}': not a file name")
    if os.path.isdir(path):
        raise NnxplainError(f"{path}: is a folder; give a file name")
    name = os.path.basename(path)
    if len(os.fsencode(name)) > 255:
        raise NnxplainError(f"{path}: the file name is too long ({len(os.fsencode(name))} bytes; 255 at most)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise NnxplainError(f"{path}: the folder {folder} does not exist")
    return path


def _stage(path, data) -> str:
    """`data` (bytes, or a function that writes into the open file) in a new temporary file beside
    `path`, with the mode a plain open() would give."""
    path = check_output_name(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".nnxplain-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data) if isinstance(data, bytes) else data(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode a plain open() would
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


# Array files hold only plain numeric arrays; each member's header is read before its data, so a
# forged or truncated file (a header that claims more than the file holds) is refused unread.
PLAIN_KINDS = "biufUS"  # booleans, integers, floats, strings: nothing that unpickles
MAX_HEADER = 100000  # numpy's own limit for headers it reads safely


def load_array(path: str | os.PathLike) -> np.ndarray:
    """A batch from .npy, or from .npz (the array `x`, or its only array)."""
    arrays = load_arrays(path, "a readable .npy/.npz file")
    if None in arrays or "x" in arrays or len(arrays) == 1:
        array = arrays[None if None in arrays else "x" if "x" in arrays else next(iter(arrays))]()
        if array.ndim == 0:
            raise NnxplainError(f"{path}: holds a single number, not a batch of samples")
        return array
    raise NnxplainError(f"{path}: holds arrays {', '.join(arrays) or 'none'}; name the input array 'x'")


def load_arrays(path, what: str, check=None) -> dict:
    """{name: read()} for the arrays of an .npz ({None: read()} for an .npy). Nothing is read but the
    headers until read() is called; `check(name, shape, dtype)` may refuse an array by its header
    (raise NnxplainError) before its data is read. Not a regular file (a FIFO would block), not an
    array file, an object array, or a header that claims more data than the file holds: one clear
    error naming the file."""
    import zipfile
    path = os.fspath(path)

    def fail(reason):
        return NnxplainError(f"{path}: not {what} ({reason})")

    if not os.path.exists(path):
        raise fail("no such file")
    if not os.path.isfile(path):
        raise fail("not a regular file")

    try:
        with open(path, "rb") as f:
            magic = f.read(6)
            size = os.fstat(f.fileno()).st_size
            if magic == b"\x93NUMPY":
                f.seek(0)
                shape, dtype, offset, fortran = _header(f, size, fail, check, None)
                return {None: lambda: _read(path, offset, shape, dtype, fortran)}
        if not zipfile.is_zipfile(path):
            raise fail("neither .npy nor .npz")
        out = {}
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[:-len(".npy")]
                with z.open(info) as member:
                    _header(member, info.file_size, fail, check, name)
                out[name] = (lambda info=info: _read_member(path, info, fail))
        return out
    except NnxplainError:
        raise
    except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile, NotImplementedError) as exc:
        raise fail(first_line(exc)) from None


def _header(f, size: int, fail, check, name):
    """(shape, dtype, data offset, Fortran order) of the array file open at its start, checked
    against `size`, the bytes the file (or zip member) holds."""
    try:
        version = np.lib.format.read_magic(f)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"array format version {version[0]}.{version[1]} is not read here")
        shape, fortran, dtype = readers[version](f, max_header_size=MAX_HEADER)
    except (ValueError, EOFError) as exc:
        raise fail(f"a broken array header{'' if name is None else f' in {name}'}: {first_line(exc)}") from None
    label = "the array" if name is None else f"array '{name}'"
    if dtype.kind not in PLAIN_KINDS or dtype.hasobject:
        raise fail(f"{label} is of type {dtype}; only plain numeric arrays are read")
    count = int(np.prod(shape, dtype=object))
    offset = f.tell()
    if count * dtype.itemsize > size - offset:
        raise fail(f"{label} claims shape {list(shape)} ({count * dtype.itemsize} bytes) but the file holds "
                   f"{max(size - offset, 0)}: truncated or forged")
    if check is not None:
        check(name, tuple(shape), dtype)
    return tuple(shape), dtype, offset, fortran


def _read(path, offset, shape, dtype, fortran) -> np.ndarray:
    count = int(np.prod(shape, dtype=object))
    with open(path, "rb") as f:
        f.seek(offset)
        data = np.fromfile(f, dtype, count) if count else np.empty(0, dtype)
    return data.reshape(shape, order="F" if fortran else "C")


def _read_member(path, info, fail):
    """An .npz member's array, its header already checked against the member's size."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z, z.open(info) as member:
            return np.lib.format.read_array(member, allow_pickle=False, max_header_size=MAX_HEADER)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise fail(first_line(exc)) from None
