"""Perturbation analysis on token models: each method's most relevant tokens are replaced by a mask
token id, step by step, padding never; the curve is the explained score after each step and AOPC
its mean drop. Checked on a bag-of-embeddings model built here, whose score numpy computes exactly
(so the order, the replaced ids and every point of the curve have an oracle), and end to end on
the modern zoo's BERT and GPT-2."""
import csv

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from nnxplain.cli import main
from nnxplain.errors import NnxplainError
from nnxplain.evaluate import TokenEvaluation, evaluate, token_order

from conftest import ZOO_DIR, model, tensor

VOCAB, HIDDEN, CLASSES, SEQ = 20, 6, 3, 7
MASK_TOKEN = 0


@pytest.fixture(scope="module")
def bag():
    """logits = sum over the attended tokens of table[id] @ w + b: the score is linear in each token's
    embedding, so input x gradient per token is each token's exact contribution."""
    rng = np.random.default_rng(3)
    weights = {"table": rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32),
               "w": rng.standard_normal((HIDDEN, CLASSES)).astype(np.float32),
               "b": rng.standard_normal(CLASSES).astype(np.float32), "axis": np.array([1], np.int64),
               "last": np.array([-1], np.int64)}
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["embedded"]),
             helper.make_node("Cast", ["attention_mask"], ["mask_float"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mask_float", "last"], ["mask3"]),
             helper.make_node("Mul", ["embedded", "mask3"], ["kept"]),
             helper.make_node("ReduceSum", ["kept", "axis"], ["pooled"], keepdims=0),
             helper.make_node("MatMul", ["pooled", "w"], ["projected"]),
             helper.make_node("Add", ["projected", "b"], ["logits"])]
    proto = model(nodes, [tensor("input_ids", ("N", "S"), TensorProto.INT64),
                          tensor("attention_mask", ("N", "S"), TensorProto.INT64)],
                  [tensor("logits", ("N", CLASSES))], weights)
    onnx.checker.check_model(proto)
    return proto, weights


def bag_scores(weights, ids, mask):
    """The bag model in numpy (float64): [N, classes]."""
    return (weights["table"].astype(np.float64)[ids] * mask[..., None]).sum(1) @ weights["w"] + weights["b"]


@pytest.fixture(scope="module")
def texts():
    rng = np.random.default_rng(4)
    ids = rng.integers(1, VOCAB, (5, SEQ)).astype(np.int64)
    mask = np.ones((5, SEQ), np.int64)
    mask[1, -3:] = 0  # right padding
    mask[3, :2] = 0   # left padding
    return {"input_ids": ids, "attention_mask": mask}


class Recording:
    """A scorer that remembers the input ids of every call."""

    def __init__(self, scorer):
        self.scorer, self.ids = scorer, []

    def __call__(self, feeds):
        self.ids.append(feeds["input_ids"].copy())
        return self.scorer(feeds)


def expected_steps(ids, mask, relevance, steps):
    """The ids after 0..steps replacements, as the definition says: per text, its attended positions
    by decreasing relevance (ties: the earlier position first), the first k of them set to the mask token."""
    out = []
    for k in range(steps + 1):
        step = ids.copy()
        for i in range(len(ids)):
            attended = [p for p in range(ids.shape[1]) if mask[i, p]]
            ranked = sorted(attended, key=lambda p: (-relevance[i, p], p))
            step[i, ranked[:k]] = MASK_TOKEN
        out.append(step)
    return out


def test_each_step_replaces_the_next_most_relevant_token_and_never_padding(bag, texts):
    proto, weights = bag
    ids, mask = texts["input_ids"], texts["attention_mask"]
    evaluation = TokenEvaluation(proto, ["input_t_gradient"], longest=SEQ, mask_token=MASK_TOKEN)
    evaluation.setup()
    evaluation.scorer = Recording(evaluation.scorer)
    sums = evaluation.sums(texts)
    # the calls: the predicted classes, then per method (input_t_gradient, random) its curve's steps + 1 points
    calls = evaluation.scorer.ids
    assert len(calls) == 1 + 2 * (SEQ + 1)
    classes = bag_scores(weights, ids, mask).argmax(1)
    contribution = (weights["table"].astype(np.float64)[ids] @ weights["w"])[np.arange(len(ids)), :, classes]
    relevance = contribution * mask  # input x gradient per token on this model
    assert (relevance[mask == 1] < 0).any()  # padding (relevance 0) would come before these if it were ranked
    for got, want in zip(calls[1:SEQ + 2], expected_steps(ids, mask, relevance, SEQ)):
        assert np.array_equal(got, want)
    random_calls = calls[SEQ + 2:]
    for before, after in zip(random_calls, random_calls[1:]):  # one more attended token each step, as long as any is left
        changed = before != after
        assert not changed[mask == 0].any()
        assert np.array_equal(changed.sum(1), ((before != MASK_TOKEN) & (mask == 1)).any(1).astype(int))
    assert np.array_equal(random_calls[-1], np.where(mask == 1, MASK_TOKEN, ids))
    curve = np.array([bag_scores(weights, step, mask)[np.arange(len(ids)), classes]
                      for step in expected_steps(ids, mask, relevance, SEQ)])
    np.testing.assert_allclose(sums["curves"]["input_t_gradient"], curve.sum(1), rtol=1e-5, atol=1e-5)


def test_curve_starts_at_the_models_score_and_aopc_is_the_mean_drop(bag, texts):
    proto, weights = bag
    ids, mask = texts["input_ids"], texts["attention_mask"]
    result = evaluate(proto, ["input_t_gradient", "gradient"], texts, mask_token=MASK_TOKEN, steps=4, progress=False)
    assert result["texts"] == 5 and result["steps"] == 4 and result["mask_token"] == MASK_TOKEN
    scores = bag_scores(weights, ids, mask)
    classes = scores.argmax(1)
    for name, curve in result["curves"].items():
        assert curve.shape == (5,)
        assert curve[0] == pytest.approx(scores.max(1).mean(), rel=1e-6)
        assert result["aopc"][name] == pytest.approx(np.mean(curve[0] - curve), rel=1e-6, abs=1e-9)
    contribution = (weights["table"].astype(np.float64)[ids] @ weights["w"])[np.arange(len(ids)), :, classes] * mask
    oracle = np.array([bag_scores(weights, step, mask)[np.arange(len(ids)), classes]
                       for step in expected_steps(ids, mask, contribution, 4)])
    np.testing.assert_allclose(result["curves"]["input_t_gradient"], oracle.mean(1), rtol=1e-5)
    assert result["aopc"]["input_t_gradient"] == pytest.approx(np.mean(oracle[:1] - oracle), rel=1e-5)
    # on a model linear in each token, removing the largest contributions first is the steepest descent:
    # the random order is below it
    assert not np.allclose(result["curves"]["random"], result["curves"]["input_t_gradient"])
    assert result["aopc"]["random"] < result["aopc"]["input_t_gradient"]


def test_the_order_puts_padding_last_and_breaks_ties_by_position():
    relevance = np.array([[0.0, 2.0, -1.0, 2.0, 5.0]])
    attended = np.array([[True, True, True, True, False]])
    assert token_order(relevance, attended).tolist() == [[1, 3, 0, 2, 4]]


@pytest.mark.parametrize("name", ["bert", "gpt2.dynamo"])
def test_zoo_text_models_are_scored_at_the_explained_class_and_position(name):
    from models import modern
    inputs = modern.example_inputs(name.split(".")[0])
    path = ZOO_DIR / "modern" / f"{name}.onnx"
    result = evaluate(path, ["attn_lrp", "integrated_gradients", "gradient"], inputs, mask_token=0, steps=5,
                      progress=False)
    logits = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, inputs)[0]
    if name.startswith("gpt2"):  # a causal language model: the next token after the last position
        assert result["position"] == -1
        logits = logits[:, -1]
    for curve in result["curves"].values():
        assert curve.shape == (6,) and curve[0] == pytest.approx(logits.max(1).mean(), rel=1e-5)
    assert set(result["aopc"]) == {"attn_lrp", "integrated_gradients", "gradient", "random"}


def test_cli_on_bert_compares_attn_lrp_with_integrated_gradients(tmp_path, capsys):
    from models import modern
    inputs = modern.example_inputs("bert")
    np.savez(tmp_path / "texts.npz", **inputs)
    out = tmp_path / "curves"
    assert main(["evaluate", str(ZOO_DIR / "modern" / "bert.onnx"), "--method", "attn_lrp", "--method",
                 "integrated_gradients", "--data", str(tmp_path / "texts.npz"), "--mask-token", "0",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 texts, tokens replaced by id 0, 12 steps" in text
    assert all(name in text for name in ("attn_lrp", "integrated_gradients", "random"))
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.reader(open(tmp_path / "curves.csv")))
    assert rows[0] == ["step", "attn_lrp", "integrated_gradients", "random"] and len(rows) == 14
    logits = ort.InferenceSession(str(ZOO_DIR / "modern" / "bert.onnx"),
                                  providers=["CPUExecutionProvider"]).run(None, inputs)[0]
    assert float(rows[1][1]) == pytest.approx(logits.max(1).mean(), rel=1e-5)


@pytest.mark.parametrize("extra, message", [
    ([], "give --mask-token ID"),
    (["--mask-token", "20"], "embedding table of 20 rows"),
    (["--mask-token", "0", "--region", "2"], "--region is for images"),
    (["--mask-token", "0", "--steps", "8"], "between 1 and the most tokens a text has (7)"),
    (["--mask-token", "0", "-m", "occlusion"], "method 'occlusion' perturbs images"),
])
def test_cli_errors_on_token_models_are_one_line(bag, texts, tmp_path, capsys, extra, message):
    onnx.save(bag[0], tmp_path / "bag.onnx")
    np.savez(tmp_path / "texts.npz", **texts)
    assert main(["evaluate", str(tmp_path / "bag.onnx"), "-m", "gradient", "--data", str(tmp_path / "texts.npz"),
                 "-o", str(tmp_path / "c"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not list(tmp_path.glob("c.*"))


def test_image_models_refuse_the_token_options(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 8, 8), np.float32))
    assert main(["evaluate", str(ZOO_DIR / "digits_cnn.onnx"), "-m", "gradient", "--data", str(tmp_path / "x.npy"),
                 "--mask-token", "0", "-o", str(tmp_path / "c")]) == 2
    assert "--mask-token and --position are for token models" in capsys.readouterr().err
    with pytest.raises(NnxplainError, match="mask_token and position are for token models"):
        evaluate(ZOO_DIR / "digits_cnn.onnx", ["gradient"], np.zeros((3, 1, 8, 8), np.float32), mask_token=0)
    name = onnx.load(ZOO_DIR / "digits_cnn.onnx").graph.input[0].name
    with pytest.raises(NnxplainError, match=f"explained input '{name}' is no embedding lookup of token ids"):
        evaluate(ZOO_DIR / "digits_cnn.onnx", ["gradient"], {name: np.zeros((3, 1, 8, 8), np.float32)}, mask_token=0)


# ----------------------------------------------- faithfulness on a trained text model (AttnLRP's experiment)

SENTIMENT_VOCAB, SENTIMENT_SEQ, PAD, MASK = 32, 12, 0, 1
POSITIVE, NEGATIVE = range(2, 8), range(8, 14)  # the evidence; ids 14.. are filler words


def sentiment_texts(n, seed):
    """Texts of 6..12 tokens (right padded): filler words with 1..3 words of the label's kind and
    fewer of the other; label 1 when the positive words are more."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(14, SENTIMENT_VOCAB, (n, SENTIMENT_SEQ))
    lengths = rng.integers(6, SENTIMENT_SEQ + 1, n)
    labels = rng.integers(0, 2, n)
    for i in range(n):
        count = rng.integers(1, 4)
        others = rng.integers(0, count)
        slots = rng.choice(np.arange(1, lengths[i]), count + others, replace=False)
        own, other = (POSITIVE, NEGATIVE) if labels[i] else (NEGATIVE, POSITIVE)
        ids[i, slots[:count]] = rng.choice(list(own), count)
        ids[i, slots[count:]] = rng.choice(list(other), others)
    mask = (np.arange(SENTIMENT_SEQ)[None] < lengths[:, None]).astype(np.int64)
    return {"input_ids": np.where(mask == 1, ids, PAD).astype(np.int64), "attention_mask": mask,
            "token_type_ids": np.zeros((n, SENTIMENT_SEQ), np.int64)}, labels


@pytest.fixture(scope="module")
def sentiment_bert(tmp_path_factory):
    """A 2-layer BERT (transformers, eager attention) trained on sentiment_texts, exported by torch.onnx."""
    import warnings

    import torch
    from models import modern
    torch.manual_seed(0)
    config = modern.transformers().BertConfig(
        vocab_size=SENTIMENT_VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=SENTIMENT_SEQ, num_labels=2, attn_implementation="eager", hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0)
    net = modern.transformers().BertForSequenceClassification(config)
    texts, labels = sentiment_texts(4000, seed=0)
    feeds = {k: torch.from_numpy(v) for k, v in texts.items()}
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(2):
        for batch in torch.randperm(len(labels)).split(64):
            loss = torch.nn.functional.cross_entropy(net(**{k: v[batch] for k, v in feeds.items()}).logits,
                                                     torch.from_numpy(labels)[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    wrapped = modern.Wrapped(net.eval(), "bert").eval()
    path = tmp_path_factory.mktemp("sentiment") / "bert.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's
        torch.onnx.export(wrapped, tuple(feeds.values()), str(path), dynamo=False, opset_version=17,
                          input_names=list(texts), output_names=["logits"],
                          dynamic_axes={**{k: {0: "batch", 1: "sequence"} for k in texts}, "logits": {0: "batch"}})
    return path


def test_on_a_trained_text_model_attention_aware_lrp_and_ig_beat_the_gradient_and_random(sentiment_bert):
    texts, labels = sentiment_texts(100, seed=1)
    logits = ort.InferenceSession(str(sentiment_bert), providers=["CPUExecutionProvider"]).run(None, texts)[0]
    assert (logits.argmax(1) == labels).mean() > 0.95  # it learned the task
    result = evaluate(sentiment_bert, ["attn_lrp", "cp_lrp", "integrated_gradients", "gradient"], texts,
                      mask_token=MASK, progress=False)
    scores = result["aopc"]
    assert result["steps"] == SENTIMENT_SEQ
    for name in ("attn_lrp", "cp_lrp", "integrated_gradients"):  # they find the evidence words
        assert scores[name] > scores["gradient"] + 0.5 and scores[name] > scores["random"] + 0.5, scores
