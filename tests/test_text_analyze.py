"""`nnxplain analyze` on text: a model with integer inputs (token ids, an attention mask) reads them
by name from an .npz and writes a token heatmap (-o .html / .png) or the explanation (-o .npy).

Two kinds of models: a classifier that takes its embeddings as a float input beside `input_ids` and
`attention_mask` (its explanation [batch, seq, hidden] is summed per token), and token models proper
(int64 ids in, explained at their word embeddings, the explainer's output [batch, seq]): a token
classifier and a causal language model. Oracles: torch autograd and Captum's
LayerIntegratedGradients on the same weights."""
from __future__ import annotations

import html
import io
import re

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper as oh, numpy_helper
from PIL import Image

import nnxplain
from nnxplain.cli import main
from nnxplain.errors import NnxplainError

from conftest import relative_error
from test_token_heatmap import spans, tokenizer_file

HIDDEN, WIDTH, CLASSES = 4, 6, 3
rng = np.random.default_rng(1)
W1 = rng.standard_normal((HIDDEN, WIDTH)).astype(np.float32)
W2 = rng.standard_normal((WIDTH, CLASSES)).astype(np.float32)


def classifier(path) -> str:
    """logits = (sum over attended positions of tanh(embeds W1)) W2, [batch, 3]."""
    nodes = [oh.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             oh.make_node("Unsqueeze", ["m", "last"], ["m3"]),
             oh.make_node("Mul", ["inputs_embeds", "m3"], ["e"]),
             oh.make_node("MatMul", ["e", "W1"], ["a"]), oh.make_node("Tanh", ["a"], ["h"]),
             oh.make_node("ReduceSum", ["h", "positions"], ["pooled"], keepdims=0),
             oh.make_node("MatMul", ["pooled", "W2"], ["logits"])]
    inputs = [oh.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
              oh.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
              oh.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, ["batch", "sequence", HIDDEN])]
    constants = [numpy_helper.from_array(W1, "W1"), numpy_helper.from_array(W2, "W2"),
                 numpy_helper.from_array(np.array([2], np.int64), "last"),
                 numpy_helper.from_array(np.array([1], np.int64), "positions")]
    graph = oh.make_graph(nodes, "classifier", inputs, [oh.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                                                   ["batch", CLASSES])], constants)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return str(path)


IDS = np.array([[2, 4, 5, 6, 3], [2, 7, 3, 0, 0]], np.int64)
MASK = (IDS != 0).astype(np.int64)
EMBEDS = rng.standard_normal((2, 5, HIDDEN)).astype(np.float32)


def torch_input_times_gradient() -> tuple[np.ndarray, np.ndarray]:
    """(input x gradient of each text's largest logit [2, 5, HIDDEN], the logits) in float64."""
    x = torch.tensor(EMBEDS, dtype=torch.float64, requires_grad=True)
    h = torch.tanh((x * torch.tensor(MASK, dtype=torch.float64)[..., None]) @ torch.from_numpy(W1).double())
    logits = h.sum(1) @ torch.from_numpy(W2).double()
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    return (x.grad * x).detach().numpy(), logits.detach().numpy()


@pytest.fixture
def files(tmp_path):
    model = classifier(tmp_path / "classifier.onnx")
    data = tmp_path / "texts.npz"
    np.savez(data, input_ids=IDS, attention_mask=MASK, inputs_embeds=EMBEDS)
    return model, str(data), tmp_path


def analyze(*args) -> int:
    return main(["analyze", *map(str, args)])


def test_the_explanation_is_read_by_input_name_and_written_as_the_explainer_gives_it(files):
    model, data, tmp = files
    assert analyze(model, "--method", "input_t_gradient", "--input", data, "-o", tmp / "r.npy") == 0
    expected, _ = torch_input_times_gradient()
    assert relative_error(np.load(tmp / "r.npy"), expected) < 1e-5


def test_the_html_heatmap_draws_the_decoded_attended_tokens_coloured_by_their_relevance(files, capsys):
    model, data, tmp = files
    assert analyze(model, "--method", "input_t_gradient", "--input", data, "--tokenizer", tokenizer_file(tmp),
                   "--percentile", 100, "-o", tmp / "tokens.html") == 0
    assert "wrote" in capsys.readouterr().out
    page = (tmp / "tokens.html").read_text()
    expected, logits = torch_input_times_gradient()
    per_token = expected.sum(-1)
    lines = spans(page)
    assert [[html.unescape(t) for _, _, t in line] for line in lines] == \
        [["[CLS]", "the", "cat", "sat", "[SEP]"], ["[CLS]", "<b>", "[SEP]"]]  # padding is not drawn
    for line, values, attended in zip(lines, per_token, MASK.astype(bool)):
        assert [float(v) for _, v, _ in line] == pytest.approx(values[attended], rel=1e-3, abs=1e-6)
        red = np.array([rgb[0] - rgb[2] for rgb, _, _ in line])
        assert (np.argsort(red, kind="stable") == np.argsort(values[attended], kind="stable")).all()
    # each text is labelled with its predicted class and score
    for i, row in enumerate(logits):
        assert re.search(rf"#{i}  predicted {row.argmax()}: {row.max():.3g}", page)


def test_the_npz_may_give_the_tokens_and_the_png_draws_them(files):
    model, data, tmp = files
    np.savez(tmp / "with_tokens.npz", input_ids=IDS, attention_mask=MASK, inputs_embeds=EMBEDS,
             tokens=np.array([["<s>", "a", "b", "c", "</s>"], ["<s>", "d", "</s>", "", ""]]))
    assert analyze(model, "--method", "gradient", "--input", tmp / "with_tokens.npz", "--percentile", 100,
                   "-o", tmp / "tokens.png") == 0
    pixels = np.asarray(Image.open(tmp / "tokens.png").convert("RGB")).reshape(-1, 3)
    assert np.all(pixels == (255, 0, 0), axis=1).sum() + np.all(pixels == (0, 0, 255), axis=1).sum() > 50


@pytest.mark.parametrize("change, message", [
    ({"drop": "attention_mask"}, r"holds no array 'attention_mask' for the model's input of that name"),
    ({"input_ids": IDS[:1]}, r"the inputs' batch sizes differ"),
    ({"input_ids": IDS.astype(np.float32)}, r"input 'input_ids' expects int64 data, got float32"),
    ({"tokens": np.zeros((2, 5))}, r"'tokens' must be strings \[batch, seq\]"),
])
def test_bad_text_inputs_are_named(files, capsys, change, message):
    model, _, tmp = files
    arrays = {"input_ids": IDS, "attention_mask": MASK, "inputs_embeds": EMBEDS}
    arrays.pop(change.pop("drop", None), None)
    arrays.update(change)
    np.savez(tmp / "bad.npz", **arrays)
    assert analyze(model, "--method", "gradient", "--input", tmp / "bad.npz", "-o", tmp / "out.html") == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp / "out.html").exists()


def test_text_outputs_are_html_png_or_npy(files, capsys):
    model, data, tmp = files
    assert analyze(model, "--method", "gradient", "--input", data, "-o", tmp / "out.txt") == 2
    assert "analyze on text writes .html or .png (a token heatmap) or .npy" in capsys.readouterr().err


# ------------------------------------------------------------------------- token models (int64 ids in)
# Explained at their word embeddings (nnxplain/explained.py): the explainer's inputs are the model's
# own, its output the relevance per token [batch, seq].

VOCAB, EMBED = 12, 6


class TokenClassifier(torch.nn.Module):
    """Word embeddings, a tanh layer, the masked sum over positions, 3 classes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.word, self.dense, self.head = (torch.nn.Embedding(VOCAB, EMBED), torch.nn.Linear(EMBED, EMBED),
                                            torch.nn.Linear(EMBED, 3))

    def forward(self, input_ids, attention_mask):
        h = torch.tanh(self.dense(self.word(input_ids))) * attention_mask.unsqueeze(-1).to(torch.float32)
        return self.head(h.sum(1))


class CausalLM(TokenClassifier):
    """Each position reads the positions up to it (a prefix sum through a lower-triangular mask):
    logits [batch, seq, VOCAB]."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(EMBED, VOCAB)

    def forward(self, input_ids, attention_mask):
        h = torch.tanh(self.dense(self.word(input_ids))) * attention_mask.unsqueeze(-1).to(torch.float32)
        causal = torch.tril(torch.ones(input_ids.shape[1], input_ids.shape[1]))
        return self.head(causal @ h)


def export(net, path) -> str:
    names = ["input_ids", "attention_mask"]
    torch.onnx.export(net.eval(), (torch.tensor(IDS), torch.tensor(MASK)), str(path), dynamo=False, opset_version=17,
                      input_names=names, output_names=["logits"],
                      dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names + ["logits"]})
    return str(path)


def test_analyze_a_token_model_with_integrated_gradients_into_a_token_heatmap(tmp_path):
    """The command of issue 11's 'done when', on a token classifier: the heatmap's values are
    Captum's LayerIntegratedGradients on the word embeddings, summed per token."""
    from captum.attr import LayerIntegratedGradients
    net = TokenClassifier()
    model = export(net, tmp_path / "classifier.onnx")
    np.savez(tmp_path / "tokens.npz", input_ids=IDS, attention_mask=MASK)
    assert analyze(model, "--method", "integrated_gradients", "--param", "steps=16", "--param", "reference_token=0",
                   "--input", tmp_path / "tokens.npz", "--tokenizer", tokenizer_file(tmp_path),
                   "-o", tmp_path / "tokens.html") == 0
    assert analyze(model, "--method", "integrated_gradients", "--param", "steps=16", "--param", "reference_token=0",
                   "--input", tmp_path / "tokens.npz", "-o", tmp_path / "tokens.npy") == 0
    ids, mask = torch.tensor(IDS), torch.tensor(MASK)
    with torch.no_grad():
        target = net(ids, mask).argmax(1)
    expected = LayerIntegratedGradients(net, net.word).attribute(
        (ids, mask), baselines=(torch.zeros_like(ids), mask), target=target, n_steps=16,
        method="riemann_right").sum(-1).detach().numpy()
    assert relative_error(np.load(tmp_path / "tokens.npy"), expected) < 1e-5
    lines = spans((tmp_path / "tokens.html").read_text())
    assert [[html.unescape(t) for _, _, t in line] for line in lines] == \
        [["[CLS]", "the", "cat", "sat", "[SEP]"], ["[CLS]", "<b>", "[SEP]"]]
    for line, values, attended in zip(lines, expected, MASK.astype(bool)):
        assert [float(v) for _, v, _ in line] == pytest.approx(values[attended], rel=1e-3, abs=1e-6)


def lm_gradient(net, index):
    """(the gradient of the largest logit at position `index` w.r.t. the word embeddings, summed per
    token; the logits at that position), by torch autograd."""
    store = {}

    def keep(module, args, out):
        out.retain_grad()
        store["e"] = out
    handle = net.word.register_forward_hook(keep)
    scores = net(torch.tensor(IDS), torch.tensor(MASK))[:, index]
    handle.remove()
    scores.gather(1, scores.argmax(1, keepdim=True)).sum().backward()
    return store["e"].grad.sum(-1).numpy(), scores.detach().numpy()


def test_a_causal_language_model_is_explained_at_its_last_position(tmp_path, capsys):
    """The next-token prediction: the largest logit at the last position, by torch autograd on the
    word embeddings; --position chooses another."""
    net = CausalLM()
    model = export(net, tmp_path / "lm.onnx")
    np.savez(tmp_path / "tokens.npz", input_ids=IDS, attention_mask=MASK)
    for position, index in ((None, -1), ("1", 1)):
        chosen = [] if position is None else ["--position", position]
        assert analyze(model, "--method", "gradient", *chosen, "--input", tmp_path / "tokens.npz",
                       "-o", tmp_path / "r.npy") == 0
        assert analyze(model, "--method", "gradient", *chosen, "--input", tmp_path / "tokens.npz",
                       "-o", tmp_path / "r.html") == 0
        expected, scores = lm_gradient(net, index)
        assert relative_error(np.load(tmp_path / "r.npy"), expected) < 1e-5
        page = (tmp_path / "r.html").read_text()
        assert f"gradient at position {index}" in page
        for i, row in enumerate(scores):  # labelled with the position's prediction
            assert f"#{i}  predicted {row.argmax()}: {row.max():.3g}" in page


def test_the_analyzer_takes_a_token_models_inputs_by_name(tmp_path):
    net = CausalLM()
    analyzer = nnxplain.create_analyzer("gradient", export(net, tmp_path / "lm.onnx"), position=2)
    r = analyzer.analyze({"input_ids": IDS, "attention_mask": MASK})
    assert relative_error(r, lm_gradient(net, 2)[0]) < 1e-5
    with pytest.raises(NnxplainError, match="X lacks 'attention_mask'"):
        analyzer.analyze({"input_ids": IDS})
