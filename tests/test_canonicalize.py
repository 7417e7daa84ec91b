"""Canonicalization rewrites the model into fewer ops without changing its outputs."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models import zoo
import nnxplain
from nnxplain.canonicalize import canonicalize
from nnxplain.errors import NnxplainError
from nnxplain.load import load
from nnxplain.runtime import session

from conftest import ZOO_DIR, relative_error


def outputs(model, x):
    return session(model).run(None, {model.graph.input[0].name: x})


def ops(model):
    return sorted({n.op_type for n in model.graph.node})


def make_model(nodes, inits, in_shape, out_shape, opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def bn_params(rng, c, prefix="bn"):
    return {f"{prefix}_s": rng.uniform(-1.5, 1.5, c).astype(np.float32), f"{prefix}_b": rng.normal(size=c).astype(np.float32),
            f"{prefix}_m": rng.normal(size=c).astype(np.float32), f"{prefix}_v": rng.uniform(0.5, 2, c).astype(np.float32)}


def bn_node(x, y, prefix="bn"):
    return helper.make_node("BatchNormalization", [x, f"{prefix}_s", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"], [y], epsilon=1e-3)


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_zoo_outputs_are_kept_and_batchnorm_is_folded(name, rng):
    original = load(ZOO_DIR / f"{name}.onnx")
    canonical = canonicalize(original)
    x = rng.normal(size=(3, *zoo.MODELS[name][1])).astype(np.float32)
    assert relative_error(outputs(canonical, x)[0], outputs(original, x)[0]) < 1e-5
    assert "BatchNormalization" not in ops(canonical)
    onnx.checker.check_model(canonical, full_check=True)


def test_batchnorm_after_gemm_and_after_matmul_is_folded(rng):
    w = rng.normal(size=(4, 6)).astype(np.float32)
    inits = {"w": w, "c": rng.normal(size=(1, 4)).astype(np.float32), "w2": rng.normal(size=(4, 5)).astype(np.float32),
             **bn_params(rng, 4, "a"), **bn_params(rng, 5, "b")}
    model = make_model([helper.make_node("Gemm", ["x", "w", "c"], ["g"], transB=1, alpha=0.7, beta=1.3),
                        bn_node("g", "h", "a"), helper.make_node("MatMul", ["h", "w2"], ["m"]), bn_node("m", "y", "b")],
                       inits, ["N", 6], ["N", 5])
    canonical = canonicalize(load(model))
    assert ops(canonical) == ["Gemm"]
    x = rng.normal(size=(7, 6)).astype(np.float32)
    assert relative_error(outputs(canonical, x)[0], outputs(model, x)[0]) < 1e-5


def test_batchnorm_that_cannot_be_folded_becomes_an_affine(rng):
    """On the input itself, and after a conv whose output is also used elsewhere."""
    inits = {"w": rng.normal(size=(3, 2, 3, 3)).astype(np.float32), **bn_params(rng, 2, "a"), **bn_params(rng, 3, "b")}
    model = make_model([bn_node("x", "h", "a"), helper.make_node("Conv", ["h", "w"], ["c"], pads=[1, 1, 1, 1]),
                        bn_node("c", "d", "b"), helper.make_node("Add", ["c", "d"], ["y"])],
                       inits, ["N", 2, 5, 5], ["N", 3, 5, 5])
    canonical = canonicalize(load(model))
    assert "BatchNormalization" not in ops(canonical) and "Mul" in ops(canonical)
    x = rng.normal(size=(2, 2, 5, 5)).astype(np.float32)
    assert relative_error(outputs(canonical, x)[0], outputs(model, x)[0]) < 1e-5


def test_dropout_identity_and_trailing_softmax_are_removed(rng):
    inits = {"w": rng.normal(size=(6, 4)).astype(np.float32), "b": rng.normal(size=4).astype(np.float32)}
    model = make_model([helper.make_node("Identity", ["x"], ["i"]), helper.make_node("Dropout", ["i"], ["d"]),
                        helper.make_node("MatMul", ["d", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["z"]),
                        helper.make_node("Softmax", ["z"], ["y"], axis=1)], inits, ["N", 6], ["N", 4])
    canonical = canonicalize(load(model))
    assert ops(canonical) == ["Gemm"], "MatMul + Add became one Gemm; Identity, Dropout and Softmax are gone"
    assert canonical.graph.output[0].name == "y", "the output keeps its name"
    x = rng.normal(size=(3, 6)).astype(np.float32)
    scores = x @ inits["w"] + inits["b"]
    assert relative_error(outputs(canonical, x)[0], scores) < 1e-5
    kept = canonicalize(load(model), keep_softmax=True)
    assert "Softmax" in ops(kept)
    assert relative_error(outputs(kept, x)[0], outputs(model, x)[0]) < 1e-5


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_auto_pad_becomes_explicit(mode, rng):
    inits = {"w": rng.normal(size=(2, 1, 4, 3)).astype(np.float32)}
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], auto_pad=mode, strides=[2, 1])],
                       inits, ["N", 1, 7, 6], None)
    canonical = canonicalize(load(model))
    conv = canonical.graph.node[0]
    assert helper.get_attribute_value(next(a for a in conv.attribute if a.name == "auto_pad")) == b"NOTSET"
    x = rng.normal(size=(2, 1, 7, 6)).astype(np.float32)
    assert relative_error(outputs(canonical, x)[0], outputs(model, x)[0]) < 1e-5


# --- each rewrite: where it applies, and the reason it gives where it does not ------------------
def skipped_by(model, keep_softmax=False):
    skipped = []
    canonical = canonicalize(load(model), keep_softmax=keep_softmax, skipped=skipped)
    return canonical, {(s.rewrite, s.node): s.reason for s in skipped}


def conv_bn_model(rng, nodes, outputs=("y",), inputs=()):
    """x [N, 2, 5, 5] -> `nodes` -> outputs, with a Conv weight w [3, 2, 3, 3] and a BatchNormalization's
    parameters bn_* as initializers (those named in `inputs` are graph inputs instead)."""
    inits = {"w": rng.normal(size=(3, 2, 3, 3)).astype(np.float32), **bn_params(rng, 3)}
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 5, 5])] +
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(inits[k].shape)) for k in inputs],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items() if k not in inputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), inits


def conv(x="x", w="w", y="c", name="conv"):
    return helper.make_node("Conv", [x, w], [y], pads=[1, 1, 1, 1], name=name)


def bn(x="c", y="y"):
    return helper.make_node("BatchNormalization", [x, "bn_s", "bn_b", "bn_m", "bn_v"], [y], epsilon=1e-3, name="bn")


def test_fold_batchnorm_folds_into_a_conv_and_reports_nothing(rng):
    model, _ = conv_bn_model(rng, [conv(), bn()])
    canonical, skipped = skipped_by(model)
    assert ops(canonical) == ["Conv"] and skipped == {}
    x = rng.normal(size=(2, 2, 5, 5)).astype(np.float32)
    assert relative_error(outputs(canonical, x)[0], outputs(model, x)[0]) < 1e-5


FOLD_STOPS = {  # case: (nodes, outputs, graph inputs, the reason)
    "shared weight": ([conv(), bn(), conv(y="z", name="other")], ("y", "z"), (),
                      "the weight of node 'conv' (Conv) is shared with node 'other'"),
    "output read twice": ([conv(), bn(), helper.make_node("Relu", ["c"], ["z"], name="other")], ("y", "z"), (),
                          "the output of node 'conv' (Conv) is also read by node 'other'"),
    "output is a graph output": ([conv(), bn()], ("y", "c"), (),
                                 "the output of node 'conv' (Conv) is also a graph output"),
    "weight is an input": ([conv(), bn()], ("y",), ("w",), "the weight of node 'conv' (Conv) is not a constant"),
    "after a Relu": ([conv(), helper.make_node("Relu", ["c"], ["r"], name="relu"), bn(x="r")], ("y",), (),
                     "its input comes from node 'relu' (Relu), not from a Conv, Gemm, MatMul"),
}


@pytest.mark.parametrize("case", sorted(FOLD_STOPS))
def test_fold_batchnorm_says_why_it_does_not_apply(case, rng):
    """Each way the fold stops: the BatchNormalization becomes a Mul and an Add (the outputs are kept),
    and the reason names the node that is in the way."""
    nodes, outs, inputs, reason = FOLD_STOPS[case]
    model, inits = conv_bn_model(rng, nodes, outs, inputs)
    canonical, skipped = skipped_by(model)
    assert skipped == {("fold_batchnorm", "bn"): reason}
    assert "BatchNormalization" not in ops(canonical) and "Mul" in ops(canonical)
    feeds = {"x": rng.normal(size=(2, 2, 5, 5)).astype(np.float32), **{k: inits[k] for k in inputs}}
    for got, want in zip(session(canonical).run(None, feeds), session(model).run(None, feeds)):
        assert relative_error(got, want) < 1e-5


def test_batchnorm_on_the_graph_input_says_so(rng):
    model = make_model([bn_node("x", "y")], bn_params(rng, 2), ["N", 2, 5, 5], ["N", 2, 5, 5])
    _, skipped = skipped_by(model)
    assert skipped == {("fold_batchnorm", ""): "its input 'x' is a graph input, not the output of a Conv, Gemm, MatMul"}


def test_batchnorm_to_affine_must_apply(rng):
    """A BatchNormalization that is neither folded nor a fixed affine is an error naming it."""
    model, _ = conv_bn_model(rng, [conv(), bn()], inputs=("bn_v",))
    with pytest.raises(NnxplainError, match=r"node 'bn' \(BatchNormalization\): its scale, bias, mean and variance "
                                            r"must be constants"):
        canonicalize(load(model))


def test_matmul_add_to_gemm_says_why_it_does_not_apply(rng):
    inits = {"w": rng.normal(size=(6, 4)).astype(np.float32), "b": rng.normal(size=(3, 4)).astype(np.float32)}
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
                        helper.make_node("Add", ["m", "b"], ["y"], name="add")], inits, [3, 6], [3, 4])
    canonical, skipped = skipped_by(model)
    assert ops(canonical) == ["Add", "MatMul"]
    assert skipped == {("matmul_add_to_gemm", "mm"):
                       "what node 'add' (Add) adds is not a constant of one value per output feature"}


def test_drop_passthrough_says_why_it_keeps_a_node(rng):
    inits = {"w": rng.normal(size=(6, 4)).astype(np.float32)}
    model = make_model([helper.make_node("Identity", ["x"], ["y"], name="id")], inits, ["N", 6], ["N", 6])
    canonical, skipped = skipped_by(model)
    assert ops(canonical) == ["Identity"]
    assert skipped == {("drop_passthrough", "id"): "it connects graph input 'x' straight to graph output 'y'"}


def test_strip_output_softmax_is_skipped_with_keep_softmax_and_reports_nothing(rng):
    inits = {"w": rng.normal(size=(6, 4)).astype(np.float32)}
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Softmax", ["z"], ["y"])],
                       inits, ["N", 6], ["N", 4])
    canonical, skipped = skipped_by(model)
    assert "Softmax" not in ops(canonical) and skipped == {}
    kept, skipped = skipped_by(model, keep_softmax=True)
    assert "Softmax" in ops(kept) and skipped == {}


def test_explicit_pads_must_apply():
    w = np.ones((2, 1, 3, 3), np.float32)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2], name="c")],
                       {"w": w}, ["N", 1, "H", "W"], None)
    with pytest.raises(NnxplainError, match=r"node 'c' \(Conv\): auto_pad SAME_UPPER needs static spatial dims"):
        canonicalize(load(model))


def test_an_error_at_an_unfolded_batchnorm_says_why_it_was_not_folded(rng, tmp_path):
    """The Mul and Add an unfolded BatchNormalization becomes are no nodes of the user's model: an error
    there names the BatchNormalization and the reason it was not folded."""
    model, _ = conv_bn_model(rng, [conv(), helper.make_node("Relu", ["c"], ["r"], name="relu"), bn(x="r")])
    method = tmp_path / "no_mul.toml"
    method.write_text('description = "the gradient, refusing Mul"\n'
                      '[[rule]]\nops = ["Mul"]\nrule = "refuse"\nreason = "no Mul here"\n')
    with pytest.raises(NnxplainError) as caught:
        nnxplain.compile(model, [str(method)])
    assert str(caught.value) == ("node 'y_scale' (Mul): no Mul here (node 'bn' (BatchNormalization) became that Mul "
                                 "and Add, not folded: its input comes from node 'relu' (Relu), not from a Conv, "
                                 "Gemm, MatMul)")


def test_support_shows_why_a_batchnorm_stayed_unfolded(rng, tmp_path, capsys):
    from nnxplain.cli import main
    model, _ = conv_bn_model(rng, [conv(), bn(), conv(y="z", name="other")], ("y", "z"))
    path = tmp_path / "shared.onnx"
    onnx.save(model, str(path))
    assert main(["support", str(path), "--method", "lrp.epsilon"]) == 0
    out = capsys.readouterr().out
    assert "rewrites not applied:\n  node 'bn' (BatchNormalization): fold_batchnorm does not apply: the weight of node " \
           "'conv' (Conv) is shared with node 'other'\n" in out


@pytest.mark.parametrize("batch", ["N", 2], ids=["dynamic batch: Reshape to Shape(x)", "static: to a constant"])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_strip_output_softmax_through_the_opset_converters_flatten_and_reshape(op, batch, rng):
    """An opset 11 Softmax over the axes from 1 on, of a 4-D tensor, becomes Flatten -> Softmax ->
    Reshape when the model is upgraded to opset 17; all three go, and the output is the logits."""
    inits = {"w": rng.normal(size=(3, 2, 1, 1)).astype(np.float32)}
    model = make_model([helper.make_node("Conv", ["x", "w"], ["z"]), helper.make_node(op, ["z"], ["y"], axis=1)],
                       inits, [batch, 2, 3, 3], [batch, 3, 3, 3], opset=11)
    upgraded = load(model)
    assert [n.op_type for n in upgraded.graph.node if n.op_type != "Shape"] == ["Conv", "Flatten", op, "Reshape"]
    canonical, skipped = skipped_by(model)
    assert ops(canonical) == ["Conv"] and skipped == {}
    assert canonical.graph.output[0].name == "y", "the output keeps its name"
    x = rng.normal(size=(2, 2, 3, 3)).astype(np.float32)
    logits = make_model([helper.make_node("Conv", ["x", "w"], ["y"])], inits, [batch, 2, 3, 3], None)
    assert relative_error(outputs(canonical, x)[0], outputs(logits, x)[0]) < 1e-5


def test_strip_output_softmax_keeps_a_reshape_that_changes_the_shape(rng):
    """Flatten -> Softmax -> Reshape to another shape than the Flatten's input: removing the three
    would change the output's shape, so the Softmax stays and the reason names both nodes."""
    inits = {"w": rng.normal(size=(3, 2, 1, 1)).astype(np.float32), "shape": np.array([2, 9, 3], np.int64)}
    model = make_model([helper.make_node("Conv", ["x", "w"], ["z"]), helper.make_node("Flatten", ["z"], ["f"], name="flat"),
                        helper.make_node("Softmax", ["f"], ["p"], name="sm"),
                        helper.make_node("Reshape", ["p", "shape"], ["y"], name="back")],
                       inits, [2, 2, 3, 3], [2, 9, 3])
    canonical, skipped = skipped_by(model)
    assert "Softmax" in ops(canonical)
    assert skipped == {("strip_output_softmax", "sm"): "the Reshape after it ('back') does not restore the shape of "
                                                       "'z' that the Flatten before it ('flat') flattened"}


def decomposed_layer_norm(rng, opset=17, exponent=2.0, axes=(-1,), affine=True, x_shape=("N", 3, 6), extra=()):
    """x -> the steps of a LayerNormalization over `axes` as exporters before opset 17 write them
    (ReduceMean, Sub, Pow, ReduceMean, Add eps, Sqrt, Div, Mul scale, Add bias) -> y. Opset 18 gives
    ReduceMean's axes as an input. `extra`: more nodes (reading the steps' outputs)."""
    normalized = [x_shape[a] for a in axes]
    inits = {"two": np.array(exponent, np.float32), "eps": np.array(1e-5, np.float32),
             "scale": rng.normal(size=normalized).astype(np.float32), "bias": rng.normal(size=normalized).astype(np.float32)}
    if opset >= 18:
        inits["axes"] = np.array(axes, np.int64)
        reduce = lambda i, o, name: helper.make_node("ReduceMean", [i, "axes"], [o], name=name)  # noqa: E731
    else:
        reduce = lambda i, o, name: helper.make_node("ReduceMean", [i], [o], name=name, axes=list(axes))  # noqa: E731
    nodes = [reduce("x", "mu", "mean"), helper.make_node("Sub", ["x", "mu"], ["d"], name="sub"),
             helper.make_node("Pow", ["d", "two"], ["d2"], name="square"), reduce("d2", "var", "variance"),
             helper.make_node("Add", ["var", "eps"], ["ve"], name="plus_eps"), helper.make_node("Sqrt", ["ve"], ["std"], name="sqrt"),
             helper.make_node("Div", ["d", "std"], ["n" if affine else "y"], name="div")]
    if affine:
        nodes += [helper.make_node("Mul", ["n", "scale"], ["s"], name="times_scale"),
                  helper.make_node("Add", ["s", "bias"], ["y"], name="plus_bias")]
    model = make_model(nodes + list(extra), inits, list(x_shape), None, opset=opset)
    model.graph.output.extend(helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for n in extra for o in n.output)
    return model


@pytest.mark.parametrize("opset, axes, affine", [(17, (-1,), True), (18, (-1,), True), (17, (1, 2), True),
                                                 (18, (2,), False)])
def test_decomposed_layer_norm_becomes_one_node(opset, axes, affine, rng):
    """The decomposed LayerNormalization of older exports (ReduceMean axes as attribute or input,
    over the last axis or the last two, with or without scale and bias) becomes one
    LayerNormalization node, and the model computes what it did."""
    model = decomposed_layer_norm(rng, opset, axes=axes, affine=affine)
    canonical, skipped = skipped_by(model)
    assert ops(canonical) == ["LayerNormalization"] and skipped == {}
    x = (rng.normal(size=(4, 3, 6)) * 3 + 1).astype(np.float32)
    assert relative_error(outputs(canonical, x)[0], outputs(model, x)[0]) < 1e-5


@pytest.mark.parametrize("change, reason", [
    (dict(exponent=3.0), "node 'square' (Pow) does not square (its exponent is not the constant 2)"),
    (dict(axes=(1,), affine=False), "the ReduceMeans reduce axes [1], not the trailing axes of the rank-3 input"),
    (dict(extra=[helper.make_node("Relu", ["mu"], ["r"], name="reads_the_mean")]),  # an output: not cleaned up
     "'mu' (of node 'mean', ReduceMean) is also read by node 'reads_the_mean' (Relu)"),
])
def test_near_miss_layer_norm_stays_and_says_why(change, reason, rng):
    """A Div by a Sqrt that is almost a LayerNormalization stays as it is, with the step that differs."""
    model = decomposed_layer_norm(rng, **change)
    canonical, skipped = skipped_by(model)
    assert "LayerNormalization" not in ops(canonical)
    assert skipped == {("fuse_layer_norm", "div"): reason}
