"""Outputs with positions, [batch, positions, scores] (a language model's logits, token
classification): the explained position is chosen (`position=` / `--position last|N`, default `last`
for a causal model), then the neuron among that position's scores, as for any output.

The models are small sequence models written here in ONNX, with a float input [batch, sequence,
features] and dynamic batch and sequence: a position-wise MLP mixed across positions either by the
mean over all positions (token classification) or causally, by a prefix sum through a Trilu mask
(a causal language model). torch autograd on the same weights is the oracle."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper as oh, numpy_helper

import nnxplain
from nnxplain.canonicalize import canonical_graph
from nnxplain.cli import main
from nnxplain.compiler import POSITION_KEY, explained_output, explained_position
from nnxplain.errors import NnxplainError
from nnxplain.runtime import session

from conftest import relative_error

FEATURES, HIDDEN, CLASSES = 4, 5, 3
MODERN = Path(__file__).resolve().parent.parent / "models" / "modern"
rng = np.random.default_rng(0)
W1 = rng.standard_normal((FEATURES, HIDDEN)).astype(np.float32)
W2 = rng.standard_normal((HIDDEN, CLASSES)).astype(np.float32)


def sequence_model(causal: bool, static_length: int | None = None) -> onnx.ModelProto:
    """y = (mix(tanh(x W1))) W2, mix: the mean over positions, or the causal prefix sum."""
    length = static_length or "sequence"
    nodes = [oh.make_node("MatMul", ["x", "W1"], ["a"]), oh.make_node("Tanh", ["a"], ["h"])]
    if causal:
        nodes += [oh.make_node("Shape", ["x"], ["shape"], start=1, end=2),
                  oh.make_node("Concat", ["shape", "shape"], ["square"], axis=0),
                  oh.make_node("ConstantOfShape", ["square"], ["ones"],
                               value=numpy_helper.from_array(np.ones(1, np.float32))),
                  oh.make_node("Trilu", ["ones"], ["lower"], upper=0),
                  oh.make_node("MatMul", ["lower", "h"], ["z"])]
    else:
        nodes += [oh.make_node("ReduceMean", ["h"], ["m"], axes=[1], keepdims=1),
                  oh.make_node("Add", ["h", "m"], ["z"])]
    nodes.append(oh.make_node("MatMul", ["z", "W2"], ["y"]))
    for i, node in enumerate(nodes):  # (sampling methods name their copies of the nodes after them)
        node.name = f"{node.op_type}_{i}"
    graph = oh.make_graph(nodes, "sequence", [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", length, FEATURES])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", length, CLASSES])],
                          [numpy_helper.from_array(W1, "W1"), numpy_helper.from_array(W2, "W2")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


def torch_forward(x: torch.Tensor, causal: bool) -> torch.Tensor:
    h = torch.tanh(x @ torch.from_numpy(W1).double())
    if causal:
        z = torch.tril(torch.ones(x.shape[1], x.shape[1], dtype=x.dtype)) @ h
    else:
        z = h + h.mean(1, keepdim=True)
    return z @ torch.from_numpy(W2).double()


def torch_gradient(x: np.ndarray, causal: bool, position: int, mode: str = "max_activation", neuron=None):
    """d y[b, position, neuron_b] / dx (float64), the neuron the largest score there, the given one, or
    all of them summed."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    scores = torch_forward(xt, causal)[:, position, :]
    if mode == "all":
        chosen = scores.sum()
    else:
        index = scores.argmax(1) if mode == "max_activation" else torch.as_tensor(neuron)
        chosen = scores.gather(1, index.reshape(-1, 1)).sum()
    chosen.backward()
    return xt.grad.numpy()


def explain(model, x, **compile_args):
    compiled = nnxplain.compile(model, ["gradient"], **compile_args)
    feeds = {"x": x}
    if compile_args.get("neuron_selection") == "index":
        feeds["neuron"] = compile_args.pop("neuron_feed")
    return compiled, session(compiled).run(["gradient"], feeds)[0]


X = rng.standard_normal((3, 6, FEATURES)).astype(np.float32)


def test_a_causal_model_is_explained_at_its_last_position_by_default():
    compiled, r = explain(sequence_model(causal=True), X)
    assert relative_error(r, torch_gradient(X, True, -1)) < 1e-5
    # the last position of the causal prefix sum reads every position: all of them get relevance
    assert (np.abs(r).sum(-1) > 0).all()
    assert {p.key: p.value for p in compiled.metadata_props}[POSITION_KEY] == "-1"


@pytest.mark.parametrize("position", [0, 2, -2, "last", "3"])
@pytest.mark.parametrize("causal", [True, False])
def test_the_chosen_position_selects_the_neuron_among_its_scores(causal, position):
    _, r = explain(sequence_model(causal), X, position=position)
    index = -1 if position == "last" else int(position)
    assert relative_error(r, torch_gradient(X, causal, index)) < 1e-5
    if causal:  # causality: the positions after the explained one do not matter
        assert not r[:, index % X.shape[1] + 1:].any()


def test_index_and_all_selection_apply_to_the_chosen_position():
    neurons = np.array([2, 0, 1], np.int64)
    compiled = nnxplain.compile(sequence_model(False), ["gradient"], neuron_selection="index", position=1)
    r = session(compiled).run(["gradient"], {"x": X, "neuron": neurons})[0]
    assert relative_error(r, torch_gradient(X, False, 1, "index", neurons)) < 1e-5
    _, r = explain(sequence_model(True), X, neuron_selection="all", position=-3)
    assert relative_error(r, torch_gradient(X, True, -3, "all")) < 1e-5


def test_the_analyzer_takes_a_position_and_checks_neurons_against_one_positions_scores():
    analyzer = nnxplain.create_analyzer("gradient", sequence_model(False), position=4)
    assert relative_error(analyzer.analyze(X), torch_gradient(X, False, 4)) < 1e-5
    indexed = nnxplain.create_analyzer("gradient", sequence_model(False), neuron_selection_mode="index", position=4)
    assert relative_error(indexed.analyze(X, neuron_selection=2), torch_gradient(X, False, 4, "index", [2] * 3)) < 1e-5
    with pytest.raises(NnxplainError, match="neuron 3 is out of range: the explained output has neurons 0..2"):
        indexed.analyze(X, neuron_selection=3)


def test_a_position_past_a_dynamic_sequence_gives_nan_not_another_position():
    _, r = explain(sequence_model(True), X, position=6)  # X has positions 0..5
    assert np.isnan(r).all()
    _, r = explain(sequence_model(True), X, position=-7)
    assert np.isnan(r).all()


def test_a_sequence_output_without_a_natural_position_needs_one():
    with pytest.raises(NnxplainError, match=r"output 'y' has shape \[batch, sequence, 3\], scores per position: "
                                            r"choose the position to explain with --position last\|N"):
        nnxplain.compile(sequence_model(causal=False), ["gradient"])


@pytest.mark.parametrize("position, message", [
    ("first", r"position 'first' is not 'last' or a whole number"),
    (1.5, r"position must be 'last' or a whole number, got 1.5"),
    (6, r"position 6 is out of range: output 'y' \(\[batch, 6, 3\]\) has 6 positions"),
    (-7, r"position -7 is out of range"),
])
def test_bad_positions_are_named(position, message):
    with pytest.raises(NnxplainError, match=message):
        nnxplain.compile(sequence_model(True, static_length=6), ["gradient"], position=position)


def test_a_position_needs_an_output_with_positions():
    with pytest.raises(NnxplainError, match=r"position 0: output 'logits' has shape \[batch, 10\]; a position is "
                                            r"chosen in an output \[batch, positions, scores\]"):
        nnxplain.compile(MODERN.parent / "digits_cnn.onnx", ["gradient"], position=0)


def test_outputs_without_positions_are_flattened_as_before():
    """A feature map [batch, channels, length] (its dim 1 no input's sequence) is one score vector."""
    w = rng.standard_normal((2, 1, 3)).astype(np.float32)
    graph = oh.make_graph([oh.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3])], "conv",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8])],
                          [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 6])],
                          [numpy_helper.from_array(w, "w")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 10
    canonical = canonical_graph(model, False, [])
    assert explained_position(canonical, explained_output(canonical, None), None) is None
    compiled = nnxplain.compile(model, ["gradient"])
    assert POSITION_KEY not in {p.key for p in compiled.metadata_props}


@pytest.mark.parametrize("name, expected", [("gpt2", -1), ("gpt2.dynamo", -1), ("bert", None)])
def test_the_zoos_language_model_defaults_to_its_last_position(name, expected):
    """GPT-2's logits [batch, sequence, 96] share the token ids' sequence dim and its graph builds a
    causal mask (Trilu), from both exporters; BERT's classifier has no positions."""
    graph = canonical_graph(str(MODERN / f"{name}.onnx"), False, [])
    assert explained_position(graph, explained_output(graph, None), None) == expected


def test_the_cli_takes_a_position(tmp_path, capsys):
    path = tmp_path / "tagger.onnx"
    onnx.save(sequence_model(False), path)
    assert main(["compile", str(path), "--method", "gradient", "-o", str(tmp_path / "e.onnx")]) == 2
    assert "--position last|N" in capsys.readouterr().err
    assert not (tmp_path / "e.onnx").exists()
    assert main(["compile", str(path), "--method", "gradient", "--position", "last", "-o", str(tmp_path / "e.onnx")]) == 0
    explainer = onnx.load(tmp_path / "e.onnx")
    r = session(explainer).run(["gradient"], {"x": X})[0]
    assert relative_error(r, torch_gradient(X, False, -1)) < 1e-5
    np.save(tmp_path / "x.npy", X)
    assert main(["analyze", str(path), "--method", "gradient", "--position", "-2", "--input", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "r.npy")]) == 0
    assert relative_error(np.load(tmp_path / "r.npy"), torch_gradient(X, False, -2)) < 1e-5


def test_support_answers_for_a_sequence_output_at_any_position(tmp_path, capsys):
    path = tmp_path / "tagger.onnx"
    onnx.save(sequence_model(False), path)
    assert main(["support", str(path), "--method", "gradient", "--method", "integrated_gradients"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"gradient\s+applicable", out) and re.search(r"integrated_gradients\s+applicable", out)


def test_sampling_methods_select_the_same_position_and_neuron_in_every_sample():
    """integrated_gradients: the mean gradient along the path k/steps * x (k = 1..steps), times x; the
    neuron is the one selected at x (the explained sample's), at the chosen position, on every point."""
    steps = 8
    compiled = nnxplain.compile(sequence_model(True), ["integrated_gradients"], params={"steps": steps}, position=2)
    r = session(compiled).run(["integrated_gradients"], {"x": X})[0]
    with torch.no_grad():
        neuron = torch_forward(torch.tensor(X, dtype=torch.float64), True)[:, 2].argmax(1)
    gradients = [torch_gradient(X * (k / steps), True, 2, "index", neuron) for k in range(1, steps + 1)]
    assert relative_error(r, np.mean(gradients, axis=0) * X) < 1e-5
