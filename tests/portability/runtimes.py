"""Run one ONNX file on each Python-hosted ONNX engine: ONNX Runtime, onnx's reference evaluator,
OpenVINO and tract. Each runner takes (path, feeds) and returns the outputs in graph order, or
raises; `run` turns any failure, a crash of the engine included, into a one-line reason."""
from __future__ import annotations

import json
import multiprocessing
import os
import sys
import traceback

import numpy as np

PYTHON_RUNTIMES = ("onnxruntime", "reference", "openvino", "tract")


def run_onnxruntime(path, feeds):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def run_reference(path, feeds):
    import onnx
    from onnx.reference import ReferenceEvaluator
    model = onnx.load(str(path))
    return ReferenceEvaluator(model).run(None, feeds)


def run_openvino(path, feeds):
    import openvino as ov
    core = ov.Core()
    # f32 throughout: on processors with bf16 units OpenVINO's CPU plugin otherwise lowers precision
    compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2})
    request = compiled.create_infer_request()
    result = request.infer(feeds)
    return [np.array(result[out]) for out in compiled.outputs]


def run_tract(path, feeds):
    """tract as its documentation shows it: the input shapes fixed, then optimized."""
    import tract
    model = tract.onnx().load(str(path))
    names = [model.input_name(i) for i in range(model.input_count())]
    for i, name in enumerate(names):
        value = feeds[name]
        kind = {np.dtype(np.float32): "f32", np.dtype(np.int64): "i64"}[value.dtype]
        model.set_input_fact(i, ",".join(str(d) for d in value.shape) + "," + kind)
    runnable = model.into_model().into_runnable()  # into_runnable optimizes for the CPU
    return [t.to_numpy() for t in runnable.run([feeds[n] for n in names])]


RUNNERS = {"onnxruntime": run_onnxruntime, "reference": run_reference, "openvino": run_openvino, "tract": run_tract}


def _child(runtime, path, feeds, conn):
    try:
        conn.send(("ok", [np.asarray(o) for o in RUNNERS[runtime](path, feeds)]))
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a reason
        conn.send(("error", first_line(exc)))


def run(runtime: str, path, feeds: dict, isolate: bool = True, timeout: float = 300):
    """(outputs, None) or (None, reason). `isolate` runs the engine in a child process, so that an
    engine that aborts (a Rust panic, a segfault) is a reason, not the end of the test run."""
    if not isolate:
        try:
            return [np.asarray(o) for o in RUNNERS[runtime](path, feeds)], None
        except BaseException as exc:  # noqa: BLE001
            return None, first_line(exc)
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(runtime, str(path), feeds, child))
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            proc.kill()
            proc.join()
            return None, f"no result within {timeout:.0f} s"
        status, value = parent.recv()
    except EOFError:
        proc.join()
        return None, f"the engine crashed (exit code {proc.exitcode})"
    proc.join()
    return (value, None) if status == "ok" else (None, value)


def first_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."
