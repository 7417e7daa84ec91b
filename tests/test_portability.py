"""The same explainer file gives the same numbers on every ONNX engine (README: Portability).

The tier (tests/portability/tier.py) compiles every method group from three zoo architectures and
runs each explainer on ONNX Runtime (Python), onnx's reference evaluator, OpenVINO, tract,
onnxruntime-node and onnxruntime-web (WASM, from Node.js); each engine's outputs must match ONNX
Runtime's (or, where float32 rounding makes the engines disagree, the float64 result). An engine
that cannot run an explainer fails its test with the reason; none is skipped. The README's table is
the one this run produces.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import nnxplain
from nnxplain import noise, portable
from nnxplain.emitter import Emitter
from tests.portability import tier

ROOT = tier.ROOT


@pytest.fixture(scope="session")
def verdicts(tmp_path_factory):
    return tier.run_tier(tmp_path_factory.mktemp("portability"))


@pytest.mark.parametrize("group", [g.name for g in tier.GROUPS])
@pytest.mark.parametrize("runtime", tier.RUNTIMES)
def test_same_numbers_on_every_engine(verdicts, runtime, group):
    failed = [f"{case}: {v.reason}" for case, v in verdicts[(runtime, group)] if not v.ok]
    assert not failed, f"{tier.RUNTIME_NAMES[runtime]} on the {group} group:\n" + "\n".join(failed)


def test_readme_table_is_the_tiers(verdicts):
    """README.md holds the table this run produces (`python -m tests.portability.tier --readme` writes it)."""
    assert tier.readme_table((ROOT / "README.md").read_text()) == tier.table(verdicts)


# ------------------------------------------------------------------------------------ the normal form

def _model(nodes, inits, inputs=None, outputs=None, opset=17):
    graph = helper.make_graph(nodes, "g", inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_normal_form_check_names_each_violation():
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    depth = numpy_helper.from_array(np.array([4], np.int64), "depth")
    model = _model([helper.make_node("Gemm", ["x", "w", ""], ["a"], transB=1),
                    helper.make_node("Gemm", ["a", "w"], ["y"], transB=0),
                    helper.make_node("ArgMax", ["y"], ["i"], axis=1, keepdims=0),
                    helper.make_node("OneHot", ["i", "depth", "values"], ["h"])],
                   [w, depth, numpy_helper.from_array(np.array([0, 1], np.float32), "values")])
    model.graph.value_info.append(helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n_samples", 4]))
    problems = " | ".join(portable.violations(model))
    assert "empty optional input" in problems
    assert "initializer 'w' is read with 2 meanings" in problems
    assert "OneHot" in problems and "0-D scalar" in problems
    assert "value_info" in problems
    portable.normalize(model)
    assert portable.violations(model) == []
    onnx.checker.check_model(model, full_check=True)
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert list(gemms[0].input) == ["x", "w"] and gemms[1].input[1] != "w"


def test_normal_form_fills_a_middle_empty_input_with_its_default():
    model = _model([helper.make_node("Clip", ["x", "", "hi"], ["y"])],
                   [numpy_helper.from_array(np.array(6.0, np.float32), "hi")])
    portable.normalize(model)
    assert portable.violations(model) == []
    x = np.array([[-1e30, 0.0, 3.0, 9.0]], np.float32)
    from onnx.reference import ReferenceEvaluator
    assert np.array_equal(ReferenceEvaluator(model).run(None, {"x": x})[0], np.clip(x, None, 6.0))


def test_normal_form_gives_resize_an_empty_roi_and_scales():
    """A U-Net's Resize(x, "", "", sizes) (the exporters' spelling) becomes Resize(x, [], [], sizes)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])
    for roi_and_scales, sizes in ((["", ""], [numpy_helper.from_array(np.array([1, 2, 6, 6], np.int64), "sizes")]),
                                  (["", "scales"], [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32),
                                                                            "scales")])):
        inputs = ["x", *roi_and_scales] + (["sizes"] if roi_and_scales[1] == "" else [])
        model = _model([helper.make_node("Resize", inputs, ["y"], mode="linear")], sizes, [x], [y])
        expected = ReferenceEvaluator(model).run(None, {"x": np.arange(18, dtype=np.float32).reshape(1, 2, 3, 3)})[0]
        portable.normalize(model)
        assert portable.violations(model) == []
        got = ReferenceEvaluator(model).run(None, {"x": np.arange(18, dtype=np.float32).reshape(1, 2, 3, 3)})[0]
        assert np.array_equal(got, expected)


@pytest.mark.parametrize("methods", [["gradient", "input_t_gradient", "deconvnet", "integrated_gradients"],
                                     ["lrp.alpha_2_beta_1", "deep_taylor", "lrp.sequential_preset_a_flat"],
                                     ["smoothgrad", "vargrad", "random"]])
@pytest.mark.parametrize("arch", ["vgg16", "resnet50"])
def test_explainers_are_in_the_normal_form(arch, methods):
    """export() enforces the form; here it is checked again from the file's side, the compile
    shared no weight between forward and backward readers, and the graph stores no shape symbols."""
    params = {f"{m}.{k}": 2 for m, k in (("integrated_gradients", "steps"), ("smoothgrad", "augment_by_n"),
                                          ("vargrad", "augment_by_n")) if m in methods}
    model = nnxplain.compile(str(ROOT / "models" / "archs" / f"{arch}.onnx"), methods, params=params)
    assert portable.violations(model) == []
    assert not model.graph.value_info
    assert all(name for node in model.graph.node for name in node.input)


def test_stored_shapes_name_only_the_inputs_symbols_and_change_no_number(tmp_path):
    """`compile --store-shapes` (and nnxplain's own sessions, in memory) store every intermediate
    shape, which ONNX Runtime needs to load deep explainers in linear time; a symbol inference made
    up (smoothgrad's samples x batch) stays unnamed, and the numbers are those of the plain file."""
    from nnxplain import cli
    from nnxplain.runtime import session
    model_path = str(ROOT / "models" / "digits_cnn.onnx")
    plain, shaped = tmp_path / "plain.onnx", tmp_path / "shaped.onnx"
    common = ["compile", model_path, "--method", "gradient", "--method", "smoothgrad", "--param", "augment_by_n=3"]
    assert cli.main(common + ["-o", str(plain)]) == 0
    assert cli.main(common + ["--store-shapes", "-o", str(shaped)]) == 0
    stored = onnx.load(str(shaped))
    inputs = {d.dim_param for v in stored.graph.input for d in v.type.tensor_type.shape.dim if d.dim_param}
    assert inputs  # the model's own batch symbol
    outputs = {o.name for o in stored.graph.output}
    assert {n for node in stored.graph.node for n in node.output} - outputs <= {v.name for v in stored.graph.value_info}
    symbols = {d.dim_param for v in list(stored.graph.value_info) + list(stored.graph.output)
               for d in v.type.tensor_type.shape.dim if d.dim_param}
    assert symbols <= inputs
    x = np.random.default_rng(0).standard_normal((5, *[d.dim_value for d in stored.graph.input[0].type.tensor_type.shape.dim[1:]])).astype(np.float32)
    feeds = {stored.graph.input[0].name: x}
    want = session(plain.read_bytes()).run(None, feeds)  # bytes: loaded as written, no shapes added
    got = session(str(shaped)).run(None, feeds)
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g, w)


def test_a_session_stores_the_shapes_in_memory_and_leaves_the_model_as_it_was():
    from nnxplain.runtime import session
    explainer = nnxplain.compile(str(ROOT / "models" / "digits_cnn.onnx"), ["gradient"])
    before = explainer.SerializeToString()
    session(explainer)
    assert explainer.SerializeToString() == before


# ------------------------------------------------------------------------------------ metadata

def test_metadata_says_what_the_explainer_computes(tmp_path):
    import hashlib
    source = ROOT / "models" / "archs" / "vgg16.onnx"
    model = nnxplain.compile(str(source), ["lrp.epsilon", "smoothgrad"], neuron_selection="index",
                             params={"epsilon": 0.25, "augment_by_n": 3})
    props = {p.key: p.value for p in model.metadata_props}
    assert model.producer_name == "nnxplain" and props["nnxplain.version"] == nnxplain.__version__
    assert props["nnxplain.source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert props["nnxplain.source"] == "vgg16.onnx"
    assert props["nnxplain.neuron_selection"] == "index"
    assert props["nnxplain.explained_output"] == model.graph.output[0].name
    methods = {m["name"]: m for m in json.loads(props["nnxplain.methods"])}
    assert methods["lrp.epsilon"]["params"]["epsilon"] == 0.25 and methods["lrp.epsilon"]["outputs"] == ["lrp.epsilon"]
    sg = methods["smoothgrad"]
    assert sg["params"]["augment_by_n"] == 3 and sg["params"]["noise"] == "graph" and sg["base"] == "gradient"
    assert sg["sampling"] == {"inputs": "noise", "reduce": "mean"}
    onnx.save(model, tmp_path / "e.onnx")  # survives a round trip through a file
    assert {p.key for p in onnx.load(tmp_path / "e.onnx").metadata_props} == set(props)


# ------------------------------------------------------------------------------------ noise

def test_in_graph_noise_is_the_documented_generator():
    graph = gs.Graph(opset=17)
    e = Emitter(graph)
    z = e.Identity(noise.emit(e, 11, 3, [2, 5, 7]))
    z.dtype, z.shape = np.float32, [3, 2, 5, 7]
    graph.outputs = [z]
    model = gs.export_onnx(graph)
    model.ir_version = 10
    import onnxruntime as ort
    out = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {})[0]
    ref = noise.standard_normal(11, 3, [2, 5, 7])
    assert np.abs(out - ref).max() <= 1e-6 * np.abs(ref).max()
    # the integer part by hand, from the definition in nnxplain/noise.py (sample 1, element 17)
    import hashlib
    keys = [hashlib.sha512(f"nnxplain-noise/11/1/{j}".encode()).digest() for j in (0, 1)]
    u = []
    for d in keys:
        left, right = 17 // 4096, 17 % 4096
        for r in range(20):
            p = 3371 * right
            left, right = p % 4096, (left + p // 4096 + (256 * d[2 * r] + d[2 * r + 1]) % 4096) % 4096
        u.append(np.float32(left * 2.0 ** -12 + (right + 0.5) * 2.0 ** -24))
    expected = np.sqrt(-2 * np.log(np.float64(u[0]))) * np.cos(2 * np.pi * np.float64(u[1]))
    assert abs(ref.reshape(3, -1)[1, 17] - expected) < 1e-5


def test_in_graph_noise_is_standard_normal():
    z = noise.standard_normal(0, 16, [3, 64, 64]).ravel().astype(np.float64)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(np.mean(z ** 3)) < 0.03 and abs(np.mean(z ** 4) - 3) < 0.06
    for lag in (1, 64, 4096, 3 * 64 * 64):  # neighbours, rows, the counter's words, samples
        assert abs(np.corrcoef(z[:-lag], z[lag:])[0, 1]) < 0.01
    assert abs(np.corrcoef(z, noise.standard_normal(1, 16, [3, 64, 64]).ravel())[0, 1]) < 0.01


def test_noise_does_not_depend_on_the_batch_and_needs_no_host():
    """The explanation of an input is the same alone or in a batch; noise = "input" fed with
    nnxplain.sampling.noise gives the same numbers as the in-graph generator."""
    x = np.random.default_rng(3).random((3, 3, 32, 32), dtype=np.float32)
    model = str(ROOT / "models" / "archs" / "resnet50.onnx")
    graph = nnxplain.create_analyzer("smoothgrad", model, augment_by_n=4, noise_scale=0.1, seed=9)
    assert all(not i.name.endswith("/noise") for i in graph.session.get_inputs())
    both = graph.analyze(x)
    alone = graph.analyze(x[1:2])
    assert np.abs(both[1:2] - alone).max() <= 1e-6 * np.abs(alone).max()
    fed = nnxplain.create_analyzer("smoothgrad", model, augment_by_n=4, noise_scale=0.1, seed=9, noise="input")
    assert np.abs(fed.analyze(x) - both).max() <= 1e-6 * np.abs(both).max()


def test_noise_source_must_be_graph_or_input():
    with pytest.raises(nnxplain.NnxplainError, match="parameter 'noise' must be 'graph'"):
        nnxplain.compile(str(ROOT / "models" / "mlp.onnx"), ["smoothgrad"], params={"noise": "host"})
