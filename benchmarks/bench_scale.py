"""How compile time and ONNX Runtime load time grow with the size of the model.

    python benchmarks/bench_scale.py [--nodes 1000 3000 10000 30000 100000] [--blocks 32 64 128 256]
                                     [--load-nodes 500 1000 2000 4000] [--memory-mib 180 720]
                                     [--json out.json]

Three series, each printed as a table (and written as JSON):
  - compile: `nnxplain.compile(model, ["gradient"])` on a residual chain of Conv / Relu / Add (one
    third each, 4 channels, 8x8) with the given number of nodes: wall and CPU seconds, and the
    emitted node count. Linear growth means constant seconds per 1000 nodes.
  - sampling: smoothgrad with chunk = 1 (one block per sample) on the zoo resnet, for each number of
    blocks: compile CPU seconds.
  - load: ONNX Runtime session creation for the model and for its gradient explainer, on a chain of
    Relu nodes: the explainer as compiled (the portable file, no intermediate shapes stored), with
    memory reuse off (`SessionOptions.enable_mem_reuse = False`), and with the shapes stored
    (`nnxplain.portable.store_shapes`, what nnxplain's own sessions and `compile --store-shapes` do).
  - memory: the peak memory of `nnxplain.compile` on a 3-layer Gemm + Relu model with the given MiB
    of weights, for gradient alone and for gradient + lrp.epsilon + guided_backprop, in a fresh
    process: its resident-set high-water mark minus its size once the model is built, in units of
    the model's weight size (the explainer itself holds twice the weights: the model's and the
    transposed ones the backward pass reads).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import nnxplain  # noqa: E402

CHANNELS = 4


def residual_chain(nodes: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    graph_nodes, inits, x = [], [], "x"
    for i in range(nodes):
        if i % 3 == 0:
            inits.append(numpy_helper.from_array(
                (rng.standard_normal((CHANNELS, CHANNELS, 3, 3)) * 0.1).astype(np.float32), f"w{i}"))
            graph_nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"h{i}"], pads=[1, 1, 1, 1]))
        elif i % 3 == 1:
            graph_nodes.append(helper.make_node("Relu", [x], [f"h{i}"]))
        else:
            graph_nodes.append(helper.make_node("Add", [x, f"h{i - 2}"], [f"h{i}"]))
        x = f"h{i}"
    return _model(graph_nodes, inits, x, ["N", CHANNELS, 8, 8])


def relu_chain(nodes: int) -> onnx.ModelProto:
    graph_nodes, x = [], "x"
    for i in range(nodes):
        graph_nodes.append(helper.make_node("Relu", [x], [f"h{i}"]))
        x = f"h{i}"
    return _model(graph_nodes, [], x, ["N", 8])


def _model(nodes, inits, out, shape) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


_MEMORY_SCRIPT = r"""
import json, resource, sys
import numpy as np
from onnx import TensorProto, helper, numpy_helper
import nnxplain
width, methods = int(sys.argv[1]), sys.argv[2].split(",")
rng = np.random.default_rng(0)
nodes, inits, x = [], [], "x"
for i in range(3):
    inits.append(numpy_helper.from_array(rng.random((width, width), dtype=np.float32) * np.float32(2 / width), f"W{i}"))
    nodes += [helper.make_node("Gemm", [x, f"W{i}"], [f"z{i}"], transB=1), helper.make_node("Relu", [f"z{i}"], [f"h{i}"])]
    x = f"h{i}"
graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", width])], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 10
def rss():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1]) * 1024
base = rss()
explainer = nnxplain.compile(model, methods)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"weights": 3 * width * width * 4, "base": base, "peak": peak}))
"""


def compile_memory(mib: int, methods: list[str]) -> dict:
    """Peak memory of compiling `methods` on a model with `mib` MiB of weights, in a fresh process."""
    import subprocess
    width = int((mib * 2**20 / 12) ** 0.5)
    done = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(width), ",".join(methods)],
                          capture_output=True, text=True, check=True)
    m = json.loads(done.stdout.strip().splitlines()[-1])
    return {"weights_mib": round(m["weights"] / 2**20), "methods": methods,
            "peak_above_model_mib": round((m["peak"] - m["base"]) / 2**20),
            "peak_above_model_x_weights": round((m["peak"] - m["base"]) / m["weights"], 2)}


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def load_seconds(model_bytes: bytes, mem_reuse: bool = True) -> float:
    options = ort.SessionOptions()
    options.enable_mem_reuse = mem_reuse
    options.log_severity_level = 3
    _, wall, _ = timed(lambda: ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"]))
    return wall


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="*", default=[1000, 3000, 10000, 30000, 100000])
    parser.add_argument("--blocks", type=int, nargs="*", default=[32, 64, 128, 256])
    parser.add_argument("--load-nodes", type=int, nargs="*", default=[500, 1000, 2000, 4000])
    parser.add_argument("--memory-mib", type=int, nargs="*", default=[180, 720])
    parser.add_argument("--json", metavar="OUT.json")
    args = parser.parse_args(argv)
    results = {"compile": [], "sampling": [], "load": [], "memory": []}
    memory_runs = [(mib, methods) for mib in args.memory_mib
                   for methods in (["gradient"], ["gradient", "lrp.epsilon", "guided_backprop"])]
    bar = tqdm(total=len(args.nodes) + len(args.blocks) + len(args.load_nodes) + len(memory_runs), file=sys.stderr,
               disable=not sys.stderr.isatty())

    for n in args.nodes:
        model = residual_chain(n)
        explainer, wall, cpu = timed(lambda: nnxplain.compile(model, ["gradient"]))
        results["compile"].append({"nodes": n, "emitted_nodes": len(explainer.graph.node), "wall_s": round(wall, 2),
                                   "cpu_s": round(cpu, 2), "cpu_s_per_1000_nodes": round(cpu / n * 1000, 3)})
        bar.update(1)
    resnet = str(Path(__file__).resolve().parent.parent / "models" / "resnet.onnx")
    nnxplain.compile(resnet, ["smoothgrad"], params={"augment_by_n": 1})  # warm-up: first-use costs are not per block
    for blocks in args.blocks:
        _, wall, cpu = timed(lambda: nnxplain.compile(resnet, ["smoothgrad"],
                                                      params={"augment_by_n": blocks, "chunk": 1}))
        results["sampling"].append({"blocks": blocks, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                                    "cpu_ms_per_block": round(cpu / blocks * 1000, 2)})
        bar.update(1)
    for n in args.load_nodes:
        model = relu_chain(n)
        compiled = nnxplain.compile(model, ["gradient"])
        explainer = compiled.SerializeToString()
        shaped = nnxplain.portable.store_shapes(compiled).SerializeToString()
        results["load"].append({"nodes": n, "emitted_nodes": len(compiled.graph.node),
                                "model_s": round(load_seconds(model.SerializeToString()), 3),
                                "explainer_s": round(load_seconds(explainer), 3),
                                "explainer_no_mem_reuse_s": round(load_seconds(explainer, mem_reuse=False), 3),
                                "explainer_shapes_stored_s": round(load_seconds(shaped), 3)})
        bar.update(1)
    for mib, methods in memory_runs:
        results["memory"].append(compile_memory(mib, methods))
        bar.update(1)
    bar.close()

    print("compile time (gradient), residual Conv/Relu/Add chain")
    print("| nodes | emitted nodes | wall s | CPU s | CPU s per 1000 nodes |\n|---|---|---|---|---|")
    for r in results["compile"]:
        print(f"| {r['nodes']} | {r['emitted_nodes']} | {r['wall_s']} | {r['cpu_s']} | {r['cpu_s_per_1000_nodes']} |")
    print("\nsampling compile (smoothgrad, chunk 1), zoo resnet")
    print("| blocks | wall s | CPU s | CPU ms per block |\n|---|---|---|---|")
    for r in results["sampling"]:
        print(f"| {r['blocks']} | {r['wall_s']} | {r['cpu_s']} | {r['cpu_ms_per_block']} |")
    print("\nONNX Runtime session creation, Relu chain (gradient explainer)")
    print("| nodes | emitted nodes | model s | explainer s | explainer, mem reuse off s | explainer, shapes stored s |"
          "\n|---|---|---|---|---|---|")
    for r in results["load"]:
        print(f"| {r['nodes']} | {r['emitted_nodes']} | {r['model_s']} | {r['explainer_s']} | "
              f"{r['explainer_no_mem_reuse_s']} | {r['explainer_shapes_stored_s']} |")
    print("\npeak memory of compile, 3-layer Gemm + Relu model, above the built model")
    print("| weights MiB | methods | peak above the model MiB | x weights |\n|---|---|---|---|")
    for r in results["memory"]:
        print(f"| {r['weights_mib']} | {' + '.join(r['methods'])} | {r['peak_above_model_mib']} | "
              f"{r['peak_above_model_x_weights']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
