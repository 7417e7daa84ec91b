"""`nnxplain bench`: what each method costs on a model, against its forward pass, in one run.

Per method: compile time; the explainer's ONNX Runtime CPU run time divided by the model's forward
time (medians of interleaved repeats after a warm-up, intra-op spinning off so one session's idle
threads do not slow the other's run); peak memory of a run (the resident-set high-water mark of a
fresh process that loads the model and runs it once, minus its size before loading). Where torch
and Captum are installed and a torch twin of the model is given (a module with the same weights),
the same method is timed in Captum on the same input in the same run, and the ratio Captum /
nnxplain is reported (> 1: nnxplain is faster).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import NnxplainError
from .params import scoped

_MEMORY_SCRIPT = r"""
import json, sys, numpy as np, onnxruntime as ort
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
before = status('VmRSS:')
options = ort.SessionOptions()
options.intra_op_num_threads = int(sys.argv[3])
session = ort.InferenceSession(sys.argv[1], options, providers=['CPUExecutionProvider'])
feeds = dict(np.load(sys.argv[2]))
session.run(None, feeds)
print(json.dumps({'peak': status('VmHWM:') - before}))
"""


def environment() -> dict:
    """The versions and machine a benchmark's figures were measured with (for its JSON report)."""
    import platform

    import onnx
    import onnxruntime as ort

    from . import __version__
    env = {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "nnxplain": __version__,
           "python": platform.python_version(), "cpu_count": os.cpu_count(), "machine": platform.machine()}
    try:
        import torch
        env["torch"] = torch.__version__
    except ImportError:
        pass
    return env


def make_session(model_bytes: bytes, threads: int = 0):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def peak_memory(model_bytes: bytes, feeds: dict, threads: int = 0) -> int | None:
    """Bytes a fresh process grows by while loading the model and running it once (None if /proc is missing)."""
    if not os.path.exists("/proc/self/status"):
        return None
    with tempfile.TemporaryDirectory() as folder:
        model_path, feed_path = os.path.join(folder, "m.onnx"), os.path.join(folder, "f.npz")
        with open(model_path, "wb") as f:
            f.write(model_bytes)
        np.savez(feed_path, **feeds)
        done = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, model_path, feed_path, str(threads)],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            return None
        return json.loads(done.stdout.strip().splitlines()[-1])["peak"]


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def captum_runner(name: str, net, params: dict):
    """A function (x, target) -> attribution running method `name` in Captum, or None if no counterpart."""
    import torch
    from captum import attr

    def get(key, default):
        return type(default)(params.get(f"{name}.{key}", params.get(key, default)))

    if name == "gradient":
        return lambda x, t: attr.Saliency(net).attribute(x, target=t, abs=False)
    if name == "input_t_gradient":
        return lambda x, t: attr.InputXGradient(net).attribute(x, target=t)
    if name == "integrated_gradients":
        steps, riemann = get("steps", 64), get("riemann", "right")
        return lambda x, t: attr.IntegratedGradients(net).attribute(x, target=t, n_steps=steps,
                                                                    method=f"riemann_{riemann}")
    if name in ("smoothgrad", "vargrad"):
        n, scale = get("augment_by_n", 64), get("noise_scale", 1.0)
        return lambda x, t: attr.NoiseTunnel(attr.Saliency(net)).attribute(
            x, target=t, nt_type=name, nt_samples=n, stdevs=scale, abs=False)
    if name == "guided_backprop":
        return lambda x, t: attr.GuidedBackprop(net).attribute(x, target=t)
    if name == "deconvnet":
        return lambda x, t: attr.Deconvolution(net).attribute(x, target=t)
    if name == "deeplift":
        return lambda x, t: attr.DeepLift(net).attribute(x, target=t)
    if name in ("lrp.epsilon", "lrp.z"):  # Captum's LRP: EpsilonRule on every Conv and Linear (z: Captum's 1e-9)
        from captum.attr._utils.lrp_rules import EpsilonRule
        epsilon = get("epsilon", 1e-7) if name == "lrp.epsilon" else 1e-9
        for module in net.modules():
            if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
                module.rule = EpsilonRule(epsilon=epsilon)
        return lambda x, t: attr.LRP(net).attribute(x, target=t)
    return None


def bench(model, methods: list[str], batch: int = 8, repeats: int = 5, params: dict | None = None, twin=None,
          threads: int = 0, memory: bool = True, progress: bool = True, seed: int = 0, patterns=None) -> dict:
    """{"forward_ms", "rows": [{method, compile_s, ms, ratio, peak_mb, captum_ms, captum_ratio,
    captum_vs_nnxplain}], "torch_forward_ms"} for each method on a random batch. patterns: fitted
    patterns for the pattern methods, as `nnxplain.compile` takes them."""
    from . import compile as compile_explainer
    from .load import load
    from .methods import load_method
    from .sampling import noise_feeds

    if repeats < 1 or batch < 1:
        raise NnxplainError(f"repeats and batch must be at least 1 (got {repeats}, {batch})")
    source = load(model)
    forward_bytes = source.SerializeToString()
    forward = make_session(forward_bytes, threads)
    meta = forward.get_inputs()[0]
    dims = [d if isinstance(d, int) else batch for d in meta.shape]
    dims[0] = batch
    x = np.random.default_rng(seed).standard_normal(dims).astype(np.float32)
    forward_feeds = {meta.name: x}
    forward.run(None, forward_feeds)  # warm-up
    params = params or {}
    result = {"batch": batch, "input_shape": dims, "rows": []}
    if twin is not None:
        import torch
        xt = torch.from_numpy(x)
        with torch.no_grad():
            target = twin(xt).argmax(1)  # also the warm-up
            result["torch_forward_ms"] = 1000 * median_time(lambda: twin(xt), repeats)
    forward_times = []
    for name in tqdm(methods, desc="bench", disable=not progress, unit="method"):
        method = load_method(name)
        mine = scoped(params, name, method.settable())
        start = time.perf_counter()
        explainer = compile_explainer(source, [name], params=mine, patterns=patterns)
        compile_s = time.perf_counter() - start
        data = explainer.SerializeToString()
        session = make_session(data, threads)
        resolved = method.with_params(mine)
        feeds = {meta.name: x, **noise_feeds(session, x, {resolved.name: resolved.params.get("seed", 0)})}
        output = explainer.graph.output[-1].name
        session.run([output], feeds)  # warm-up
        times, fwd = [], []
        for k in range(repeats):  # interleaved, alternating order
            pair = [(times, lambda: session.run([output], feeds)), (fwd, lambda: forward.run(None, forward_feeds))]
            for bucket, fn in (pair if k % 2 == 0 else pair[::-1]):
                start = time.perf_counter()
                fn()
                bucket.append(time.perf_counter() - start)
        forward_times += fwd
        ms, forward_ms = 1000 * statistics.median(times), 1000 * statistics.median(fwd)
        row = {"method": name, "compile_s": compile_s, "ms": ms, "forward_ms": forward_ms, "ratio": ms / forward_ms}
        if memory:
            peak = peak_memory(data, feeds, threads)
            row["peak_mb"] = None if peak is None else peak / 2**20
        if twin is not None:
            import warnings
            warnings.filterwarnings("ignore", module="captum")  # "did not already require gradients", hooks notes
            runner = captum_runner(name, twin, {**{k: v for k, v in resolved.params.items()}, **params})
            if runner is None:
                row["captum_note"] = "no Captum counterpart"
            else:
                try:
                    runner(xt, target)  # warm-up
                except Exception as exc:  # Captum cannot run it on this model (an unsupported layer, ...)
                    row["captum_note"] = f"Captum failed: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
                else:
                    captum_ms = 1000 * median_time(lambda: runner(xt, target), repeats)
                    row.update(captum_ms=captum_ms, captum_ratio=captum_ms / result["torch_forward_ms"],
                               captum_vs_nnxplain=captum_ms / ms)
        result["rows"].append(row)
    result["forward_ms"] = 1000 * statistics.median(forward_times) if forward_times else None
    if memory:
        peak = peak_memory(forward_bytes, forward_feeds, threads)
        result["forward_peak_mb"] = None if peak is None else peak / 2**20
    return result


def table(result: dict) -> str:
    has_captum = any("captum_ms" in r for r in result["rows"])
    head = f"{'method':<24} {'compile s':>9} {'ms':>9} {'x forward':>9} {'peak MB':>8}"
    if has_captum:
        head += f" {'captum ms':>10} {'x torch fwd':>11} {'captum/nnx':>10}"
    lines = [f"batch {result['batch']}, input {result['input_shape']}: forward {result['forward_ms']:.2f} ms"
             + (f", peak {result['forward_peak_mb']:.1f} MB" if result.get("forward_peak_mb") is not None else "")
             + (f"; torch forward {result['torch_forward_ms']:.2f} ms" if "torch_forward_ms" in result else ""),
             head]
    for r in result["rows"]:
        peak = f"{r['peak_mb']:8.1f}" if r.get("peak_mb") is not None else f"{'-':>8}"
        line = f"{r['method']:<24} {r['compile_s']:9.3f} {r['ms']:9.2f} {r['ratio']:8.1f}x {peak}"
        if has_captum:
            line += (f" {r['captum_ms']:10.2f} {r['captum_ratio']:10.1f}x {r['captum_vs_nnxplain']:9.2f}x"
                     if "captum_ms" in r else f" {'-':>10} {'-':>11} {'-':>10}")
        lines.append(line)
    notes = [f"{r['method']}: {r['captum_note']}" for r in result["rows"] if r.get("captum_note")]
    if has_captum or notes:
        lines += ["Captum not timed (-): " + "; ".join(notes)] if notes else []
    return "\n".join(lines)


def load_twin(spec: str, model_path: str):
    """`module:function`: the function is called with the model's path and returns a torch module
    (eval mode) with the model's weights."""
    import importlib
    module_name, _, attr_name = spec.partition(":")
    if not attr_name:
        raise NnxplainError(f"--torch {spec}: give MODULE:FUNCTION")
    try:
        if module_name.endswith(".py"):  # a file: path/to/twins.py:function
            import importlib.util
            found = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            if found is None or not os.path.isfile(module_name):
                raise ImportError(f"no such file: {module_name}")
            module = importlib.util.module_from_spec(found)
            found.loader.exec_module(module)
        else:
            _find_package(module_name.split(".")[0], model_path)
            module = importlib.import_module(module_name)
        fn = getattr(module, attr_name)
    except (ImportError, AttributeError) as exc:
        raise NnxplainError(f"--torch {spec}: {exc}") from None
    net = fn(model_path)
    return net.eval()


def _find_package(top: str, model_path: str):
    """Make the module `top` importable as `python -m` would from the folder the command runs in, or
    else from a folder above the model file (`models.zoo:twin_of` for models/resnet.onnx from anywhere)."""
    import importlib.util
    if importlib.util.find_spec(top) is not None and os.getcwd() in sys.path:
        return
    for folder in [Path.cwd()] + list(Path(model_path).resolve().parents):
        if (folder / top).is_dir() or (folder / f"{top}.py").is_file():
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
            return


def onnx2torch_twin(model_path: str):
    """A torch twin by onnx2torch, where it is installed (None otherwise)."""
    try:
        import onnx2torch
    except ImportError:
        return None
    return onnx2torch.convert(str(model_path)).eval()
