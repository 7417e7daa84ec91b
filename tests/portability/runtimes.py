"""Run one ONNX file on each Python-hosted ONNX engine: ONNX Runtime, onnx's reference evaluator,
OpenVINO and tract. Each runner takes (path, feeds) and returns the outputs in graph order, or
raises. `python -m tests.portability.runtimes ENGINE MANIFEST OUT_DIR` runs a manifest's cases in
one process (the protocol of run_node.mjs), so that an engine that aborts (a Rust panic, a
segfault) ends only its own process and names the case."""
from __future__ import annotations

import json
import os
import sys

import numpy as np

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


def main(runtime: str, manifest: str, outdir: str):
    """Run every case of the manifest (see run_node.mjs: the same protocol) on one engine."""
    cases = json.loads(open(manifest).read())["cases"]
    os.makedirs(outdir, exist_ok=True)
    for case in cases:
        done = os.path.join(outdir, f"{case['id']}.json")
        if os.path.exists(done):
            continue  # a rerun after a crash goes on with the next case
        open(os.path.join(outdir, f"{case['id']}.started"), "w").close()
        feeds = {i["name"]: np.fromfile(i["file"], dtype=i["dtype"]).reshape(i["shape"]) for i in case["inputs"]}
        try:
            outputs = [np.ascontiguousarray(o) for o in RUNNERS[runtime](case["model"], feeds)]
            result = {"outputs": []}
            for k, out in enumerate(outputs):
                file = os.path.join(outdir, f"{case['id']}.{k}.bin")
                out.tofile(file)
                result["outputs"].append({"dtype": out.dtype.name, "shape": list(out.shape), "file": file})
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a reason
            result = {"error": first_line(exc)}
        with open(done, "w") as f:
            json.dump(result, f)


def first_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


if __name__ == "__main__":
    main(*sys.argv[1:4])
