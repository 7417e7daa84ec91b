"""The cross-runtime tier: every method group, compiled from three zoo architectures, run on six ONNX
engines and compared with ONNX Runtime (Python).

    python -m tests.portability.tier            # run it, print the table and the largest errors
    python -m tests.portability.tier --readme   # ... and write the table into README.md

tests/test_portability.py runs the same (once per test session) and checks that README.md holds the
table it produces. Engines: ONNX Runtime (Python), onnx's reference evaluator, OpenVINO and tract
(pip, the test extra), onnxruntime-node and onnxruntime-web's WASM backend (npm, installed by
`npm_packages()` into .cache/npm, run by run_node.mjs from plain Node.js).

An output passes when it is within `tolerance` times max |ORT| of ONNX Runtime's. Where the engines
disagree by more, float64 is the judge: the explainer runs again in float64 (onnx's reference
evaluator on a float64 copy of the graph), also with its inputs and weights moved by float32
rounding, which shows how far float32 arithmetic alone can move the result (LRP rules divide by
pre-activations that can be near 0); the engine passes if it is within the tolerance plus
BAND_FACTOR times that distance of the float64 result. Whatever an engine cannot do is a reason in the table, never a skip.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"
NPM_DIR = CACHE / "npm"
NPM_PACKAGES = {"onnxruntime-node": "1.30.0", "onnxruntime-web": "1.30.0"}
NODE_RUNTIMES = tuple(NPM_PACKAGES)
RUNTIMES = ("onnxruntime", "reference", "openvino", "tract") + NODE_RUNTIMES
RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime (Python)", "reference": "onnx reference evaluator",
                 "openvino": "OpenVINO", "tract": "tract", "onnxruntime-node": "onnxruntime-node",
                 "onnxruntime-web": "onnxruntime-web (WASM)"}
ARCHS = ("vgg16", "resnet50", "densenet")  # max pooling and square dense weights; residual adds; concatenation
BATCH = 2
TOLERANCE, ILL_CONDITIONED = 1e-5, 1e-4


@dataclass
class Group:
    name: str
    methods: list[str]
    params: dict = field(default_factory=dict)
    tolerance: float = TOLERANCE
    selection: str = "max_activation"
    patterns: bool = False


GROUPS = [
    Group("gradient", ["gradient", "input_t_gradient", "gradient.baseline"]),
    Group("signal", ["deconvnet", "guided_backprop"]),
    Group("lrp", ["lrp.z", "lrp.z_IB", "lrp.epsilon", "lrp.epsilon_IB", "lrp.w_square", "lrp.flat", "lrp.z_plus_fast"],
          tolerance=ILL_CONDITIONED),
    Group("lrp alpha-beta", ["lrp.alpha_2_beta_1", "lrp.alpha_2_beta_1_IB", "lrp.alpha_1_beta_0",
                             "lrp.alpha_1_beta_0_IB", "lrp.z_plus", "lrp.alpha_beta"],
          {"lrp.alpha_beta.alpha": 3.0}, ILL_CONDITIONED),
    Group("lrp presets", ["lrp.sequential_preset_a", "lrp.sequential_preset_b", "lrp.sequential_preset_a_flat",
                          "lrp.sequential_preset_b_flat", "epsilon_plus", "epsilon_plus_flat", "epsilon_alpha2_beta1",
                          "epsilon_alpha2_beta1_flat", "epsilon_gamma_box"],
          {"epsilon_gamma_box.low": 0.0, "epsilon_gamma_box.high": 1.0}, ILL_CONDITIONED),
    Group("deep taylor", ["deep_taylor", "deep_taylor.bounded"],
          {"deep_taylor.bounded.low": 0.0, "deep_taylor.bounded.high": 1.0}, ILL_CONDITIONED),
    Group("pattern", ["pattern.net", "pattern.attribution"], patterns=True),
    Group("deeplift", ["deeplift"]),
    Group("sampling", ["integrated_gradients", "smoothgrad", "vargrad"],
          {"steps": 4, "augment_by_n": 4, "noise_scale": 0.1, "smoothgrad.chunk": 2}),
    Group("index mode", ["gradient", "guided_backprop", "lrp.epsilon", "smoothgrad"],
          {"augment_by_n": 3, "noise_scale": 0.1}, selection="index"),
    Group("baselines", ["input", "random"]),
]


# ------------------------------------------------------------------------------------ the cases

def build(workdir: Path) -> list[dict]:
    """Compile every group from every architecture; write the inputs. One case per explainer."""
    import nnxplain
    from nnxplain.patterns import fit
    rng = np.random.default_rng(12)
    workdir.mkdir(parents=True, exist_ok=True)
    cases = []
    for arch in ARCHS:
        source = ROOT / "models" / "archs" / f"{arch}.onnx"
        x = rng.random((BATCH, 3, 32, 32), dtype=np.float32)  # images in [0, 1)
        patterns = None
        for group in GROUPS:
            if group.patterns and patterns is None:
                patterns = fit(str(source), rng.random((64, 3, 32, 32), dtype=np.float32), batch_size=32, progress=False)
            model = nnxplain.compile(str(source), group.methods, neuron_selection=group.selection,
                                     params=group.params, patterns=patterns if group.patterns else None)
            case = f"{arch}-{group.name.replace(' ', '_')}"
            path = workdir / f"{case}.onnx"
            onnx.save(model, path)
            feeds = {model.graph.input[0].name: x}
            if group.selection == "index":
                feeds["neuron"] = np.array([3, 7], np.int64)[:BATCH]
            inputs = []
            for name, value in feeds.items():
                file = workdir / f"{case}.in.{len(inputs)}.bin"
                value.tofile(file)
                inputs.append({"name": name, "file": str(file), "dtype": value.dtype.name, "shape": list(value.shape)})
            cases.append({"id": case, "arch": arch, "group": group.name, "model": str(path), "inputs": inputs,
                          "outputs": [o.name for o in model.graph.output]})
    (workdir / "manifest.json").write_text(json.dumps({"cases": cases}, indent=1))
    return cases


def feeds_of(case: dict) -> dict:
    return {i["name"]: np.fromfile(i["file"], dtype=i["dtype"]).reshape(i["shape"]) for i in case["inputs"]}


# ------------------------------------------------------------------------------------ the engines

def npm_packages() -> Path:
    """onnxruntime-node and onnxruntime-web, installed from the npm registry into .cache/npm (once;
    ONNXRUNTIME_NODE_INSTALL=skip: the CPU binaries are in the package, and its install script would
    download CUDA ones). Returns the node_modules folder."""
    modules = NPM_DIR / "node_modules"
    current = all((modules / name / "package.json").is_file() and
                  json.loads((modules / name / "package.json").read_text())["version"] == version
                  for name, version in NPM_PACKAGES.items())
    if not current:
        for tool in ("node", "npm"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"the portability tier needs Node.js: '{tool}' is not on PATH")
        NPM_DIR.mkdir(parents=True, exist_ok=True)
        specs = [f"{name}@{version}" for name, version in NPM_PACKAGES.items()]
        subprocess.run(["npm", "install", "--prefix", str(NPM_DIR), "--no-audit", "--no-fund", "--loglevel=error",
                        "--no-save", *specs], check=True, env={**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"},
                       stdout=subprocess.DEVNULL)
    return modules


def run_engine(runtime: str, cases: list[dict], workdir: Path) -> dict:
    """{case id: (outputs, None) or (None, reason)}: one process per engine (run_node.mjs for the npm
    packages, runtimes.py for the others); a case that crashes the engine is a reason, and a new
    process goes on with the next case."""
    outdir = workdir / runtime
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    manifest = str(workdir / "manifest.json")
    if runtime in NODE_RUNTIMES:
        command = ["node", str(Path(__file__).with_name("run_node.mjs")), runtime, str(npm_packages()), manifest, str(outdir)]
    else:
        command = [sys.executable, "-m", "tests.portability.runtimes", runtime, manifest, str(outdir)]
    for _ in range(len(cases) + 1):
        proc = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=ROOT)
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1][:250]
        crashed = [c for c in cases if (outdir / f"{c['id']}.started").exists()
                   and not (outdir / f"{c['id']}.json").exists()]
        for c in crashed:  # note the crash; the next run goes on after it
            (outdir / f"{c['id']}.json").write_text(json.dumps({"error": f"the engine crashed (exit code "
                                                                         f"{proc.returncode}): {last}"}))
        if all((outdir / f"{c['id']}.json").exists() for c in cases):
            break
        if not crashed:  # it failed before any case (no package, no node): every case says why
            return {c["id"]: (None, f"{runtime} did not start: {last}") for c in cases}
    results = {}
    for c in cases:
        result = json.loads((outdir / f"{c['id']}.json").read_text())
        if "error" in result:
            results[c["id"]] = (None, result["error"])
        else:
            results[c["id"]] = ([np.fromfile(o["file"], dtype=o["dtype"]).reshape(o["shape"])
                                 for o in result["outputs"]], None)
    return results


# ------------------------------------------------------------------------------------ the judge

def float64_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph computing in float64: initializers, inputs, outputs, Casts and constant
    attributes of float32 become float64."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    f32, f64 = onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE
    for i, t in enumerate(m.graph.initializer):
        if t.data_type == f32:
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    for v in list(m.graph.input) + list(m.graph.output):
        if v.type.tensor_type.elem_type == f32:
            v.type.tensor_type.elem_type = f64
    for node in m.graph.node:
        for a in node.attribute:
            if a.name in ("to", "dtype") and a.i == f32:
                a.i = f64
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == f32:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float64), a.t.name))
    del m.graph.value_info[:]
    return m


def float64_judge(case: dict, draws: int = 8) -> tuple[list, list]:
    """The float64 result of every output, and its float32 sensitivity: how far (max over `draws`,
    relative to max |result|) the float64 result moves when the inputs and the weights move by
    float32 rounding (each element times 1 + u 2^-24, u uniform in [-1, 1]). The max over a few
    draws is a noisy estimate on an ill-conditioned rule: on densenet's alpha-beta explainer, 3 draws
    gave anything from 3.5e-4 to 4.7e-3 depending on the graph's initializer order, 8 draws 2.9e-3."""
    from onnx.reference import ReferenceEvaluator
    model = float64_copy(onnx.load(case["model"]))
    feeds = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds_of(case).items()}
    exact = ReferenceEvaluator(model).run(None, feeds)
    rng = np.random.default_rng(0)
    bands = [0.0] * len(exact)
    for _ in range(draws):
        moved = onnx.ModelProto()
        moved.CopyFrom(model)
        for i, t in enumerate(moved.graph.initializer):
            if t.data_type == onnx.TensorProto.DOUBLE:
                a = numpy_helper.to_array(t)
                moved.graph.initializer[i].CopyFrom(
                    numpy_helper.from_array(a * (1 + rng.uniform(-1, 1, a.shape) * 2.0 ** -24), t.name))
        moved_feeds = {k: v * (1 + rng.uniform(-1, 1, v.shape) * 2.0 ** -24) if v.dtype == np.float64 else v
                       for k, v in feeds.items()}
        for k, (e, m) in enumerate(zip(exact, ReferenceEvaluator(moved).run(None, moved_feeds))):
            bands[k] = max(bands[k], relative(m, e, float(np.abs(e).max(initial=0.0))))
    return exact, bands


def relative(a: np.ndarray, b: np.ndarray, scale: float) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf") if not np.array_equal(np.isfinite(a), np.isfinite(b)) else 0.0
    return float(np.abs(a - b).max(initial=0.0) / max(scale, 1e-30))


@dataclass
class Verdict:
    ok: bool
    error: float = 0.0       # largest relative difference to ONNX Runtime over the outputs
    judged: bool = False     # decided by the float64 result
    reason: str = ""


BAND_FACTOR = 8


def judge(case: dict, group: Group, base: list, result: tuple, float64: dict | None = None) -> Verdict:
    """Within the tolerance of ONNX Runtime; or, where not and `float64` (case id -> float64_judge)
    has the case, within the tolerance plus BAND_FACTOR float32 sensitivities of the float64 result."""
    outputs, reason = result
    if reason:
        return Verdict(False, reason=reason)
    if len(outputs) != len(base):
        return Verdict(False, reason=f"{len(outputs)} outputs, ONNX Runtime gives {len(base)}")
    errors = [relative(o, b, float(np.abs(b).max(initial=0.0))) for o, b in zip(outputs, base)]
    worst = max(errors)
    if worst <= group.tolerance:
        return Verdict(True, worst)
    if float64 is None or case["id"] not in float64:
        return Verdict(False, worst, reason="needs the float64 judge")
    exact, bands = float64[case["id"]]
    for k, (o, e) in enumerate(zip(outputs, errors)):
        if e <= group.tolerance:
            continue
        mine = relative(o, exact[k], float(np.abs(exact[k]).max(initial=0.0)))
        if not mine <= group.tolerance + BAND_FACTOR * bands[k]:
            return Verdict(False, worst, True, f"output '{case['outputs'][k]}' differs from ONNX Runtime by "
                           f"{e:.1e} of max |ORT| and from float64 by {mine:.1e}, more than float32 rounding "
                           f"explains ({BAND_FACTOR} x {bands[k]:.1e})")
    return Verdict(True, worst, True)


# ------------------------------------------------------------------------------------ the tier

def run_tier(workdir: Path | None = None) -> dict:
    """{(runtime, group name): [(case id, Verdict)]} over all cases."""
    workdir = workdir or CACHE / "portability"
    shutil.rmtree(workdir, ignore_errors=True)
    cases = build(workdir)
    with ThreadPoolExecutor(max_workers=2) as pool:  # two engines at a time (each its own process)
        futures = {rt: pool.submit(run_engine, rt, cases, workdir) for rt in RUNTIMES}
        results = {rt: f.result() for rt, f in futures.items()}
    groups = {g.name: g for g in GROUPS}
    by_id = {c["id"]: c for c in cases}

    def verdicts_with(float64):
        out = {}
        for rt in RUNTIMES:
            for case in cases:
                base, reason = results["onnxruntime"][case["id"]]
                verdict = Verdict(False, reason=f"ONNX Runtime (Python) fails: {reason}") if reason else \
                    judge(case, groups[case["group"]], base, results[rt][case["id"]], float64)
                out[(rt, case["group"])] = out.get((rt, case["group"]), []) + [(case["id"], verdict)]
        return out

    first = verdicts_with(None)
    disputed = sorted({case for items in first.values() for case, v in items if v.reason == "needs the float64 judge"})
    float64 = {}
    if disputed:  # the float64 judge, two cases at a time
        with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
            float64 = dict(zip(disputed, pool.map(float64_judge, [by_id[c] for c in disputed])))
    verdicts = verdicts_with(float64)
    return verdicts


def versions() -> dict:
    out = {}
    for rt, module in (("openvino", "openvino"), ("tract", "tract")):
        try:
            from importlib.metadata import version
            out[rt] = version(module)
        except Exception:  # noqa: BLE001
            out[rt] = "?"
    out.update(NPM_PACKAGES)
    return out


def table(verdicts: dict) -> str:
    """The README's portability table: runtime x method group, same numbers or why not."""
    pinned = versions()
    notes: list[str] = []
    head = "| engine | " + " | ".join(g.name for g in GROUPS) + " |"
    lines = [head, "|---" * (len(GROUPS) + 1) + "|"]
    for rt in RUNTIMES:
        cells = []
        for g in GROUPS:
            failed = [(case, v) for case, v in verdicts[(rt, g.name)] if not v.ok]
            if not failed:
                cells.append("✓")
                continue
            text = "; ".join(f"{case.split('-')[0]}: {v.reason}" for case, v in failed)
            if text not in notes:
                notes.append(text)
            cells.append(f"✗{notes.index(text) + 1}")
        name = RUNTIME_NAMES[rt] + (f" {pinned[rt]}" if rt in pinned else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    groups = "; ".join(f"{g.name}: {', '.join('`' + m + '`' for m in g.methods)}"
                       + (" (index selection)" if g.selection == "index" else "") for g in GROUPS)
    lines.append("")
    lines.append(f"✓: every output of every method of the group, on {', '.join(ARCHS)} (batch {BATCH}, 3x32x32), "
                 f"within {TOLERANCE:g} of max |ONNX Runtime| ({ILL_CONDITIONED:g} for the LRP and Deep Taylor "
                 f"groups; where the engines differ by more, the float64 result is the judge, with {BAND_FACTOR} times what "
                 f"float32 rounding of the inputs and weights moves it as the margin). Groups: {groups}.")
    for k, note in enumerate(notes, 1):
        lines.append(f"{k}. {note}")
    return "\n".join(lines) + "\n"


README_START, README_END = "<!-- portability table: start -->", "<!-- portability table: end -->"


def readme_table(readme: str) -> str | None:
    if README_START not in readme or README_END not in readme:
        return None
    return readme.split(README_START, 1)[1].split(README_END, 1)[0].strip("\n") + "\n"


def write_readme(text: str, path: Path = ROOT / "README.md"):
    readme = path.read_text()
    before, rest = readme.split(README_START, 1)
    after = rest.split(README_END, 1)[1]
    path.write_text(f"{before}{README_START}\n{text}{README_END}{after}")


def report(verdicts: dict) -> str:
    lines = []
    for (rt, group), items in sorted(verdicts.items()):
        worst = max(items, key=lambda item: item[1].error)
        status = "ok" if all(v.ok for _, v in items) else "FAIL"
        judged = [case for case, v in items if v.judged]
        lines.append(f"{rt:18s} {group:16s} {status:4s} max {worst[1].error:.1e} ({worst[0]})"
                     + (f"; float64 judged {', '.join(judged)}" if judged else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    verdicts = run_tier()
    text = table(verdicts)
    print(report(verdicts))
    print(text)
    if "--readme" in sys.argv:
        write_readme(text)
