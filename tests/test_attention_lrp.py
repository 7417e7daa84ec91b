"""Attention-aware LRP's rules (nnxplain/attention_lrp.py), each on a small graph, equal a numpy
reference written in relevance form (float64): what the rule says relevance does, not how the
gradient-times-input form computes it.

Every model is x -> hidden layers -> a linear head without bias (so the head's LRP-0 relevance is the
explained logit's share of each hidden unit exactly), explained at each sample's largest logit.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, numpy_helper
from onnx import helper as oh

import nnxplain
from nnxplain.runtime import session

from conftest import relative_error

TOL = 1e-5
N_IN, N_HID, N_OUT, BATCH = 6, 5, 3, 4


def build(nodes, inits, hidden="h"):
    """x [N, N_IN] -> nodes -> `hidden` [N, N_HID] -> logits = hidden @ V."""
    rng = np.random.default_rng(1)
    V = rng.normal(size=(N_HID, N_OUT)).astype(np.float32)
    graph = oh.make_graph(list(nodes) + [oh.make_node("MatMul", [hidden, "V"], ["logits"], name="head")], "g",
                          [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", N_IN])],
                          [oh.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", N_OUT])],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in {**inits, "V": V}.items()])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8), V.astype(np.float64)


def explain(model, method, x):
    return session(nnxplain.compile(model, [method])).run([method], {"x": x})[0]


def head_relevance(h, V):
    """LRP-0 through the bias-free head at each sample's largest logit: R_h = h * V[:, k]."""
    k = (h @ V).argmax(1)
    return h * V[:, k].T


def z_rule(a, W, R):
    """LRP-0 through z = a @ W (no bias): R_a = a * (W @ (R / z))."""
    return a * ((R / (a @ W)) @ W.T)


@pytest.fixture
def weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, N_IN)).astype(np.float32)
    W1, W2 = (rng.normal(size=(N_IN, N_HID)).astype(np.float32) for _ in range(2))
    return x, W1, W2


@pytest.mark.parametrize("activation", ["Tanh", "Sigmoid", "Relu"])
def test_identity_rule_passes_relevance_through_an_activation(weights, activation):
    x, W1, _ = weights
    model, V = build([oh.make_node("MatMul", ["x", "W1"], ["a"]), oh.make_node(activation, ["a"], ["h"])], {"W1": W1})
    a = x.astype(np.float64) @ W1
    h = {"Tanh": np.tanh, "Sigmoid": lambda v: 1 / (1 + np.exp(-v)), "Relu": lambda v: np.maximum(v, 0)}[activation](a)
    expected = z_rule(x.astype(np.float64), W1.astype(np.float64), head_relevance(h, V))  # R_a = R_h
    assert relative_error(explain(model, "attn_lrp", x), expected) < TOL


def test_uniform_rule_gives_each_operand_of_a_product_half(weights):
    x, W1, W2 = weights
    model, V = build([oh.make_node("MatMul", ["x", "W1"], ["a"]), oh.make_node("MatMul", ["x", "W2"], ["b"]),
                      oh.make_node("Mul", ["a", "b"], ["h"])], {"W1": W1, "W2": W2})
    x64, W1_, W2_ = x.astype(np.float64), W1.astype(np.float64), W2.astype(np.float64)
    R = head_relevance((x64 @ W1_) * (x64 @ W2_), V)
    expected = z_rule(x64, W1_, R / 2) + z_rule(x64, W2_, R / 2)
    assert relative_error(explain(model, "attn_lrp", x), expected) < TOL
    assert np.allclose(expected.sum(1), R.sum(1)), "the reference conserves relevance"


@pytest.mark.parametrize("gate", ["silu", "gelu_erf", "gelu_tanh"])
def test_a_self_gated_activation_written_as_a_product_gets_the_identity_rule(weights, gate):
    """x * g(x) as exporters write SiLU and GELU is one activation: its relevance passes to x whole."""
    x, W1, _ = weights
    nodes = [oh.make_node("MatMul", ["x", "W1"], ["a"])]
    consts = {"W1": W1, "half": np.float32(0.5), "one": np.float32(1.0), "root2": np.float32(np.sqrt(2)),
              "c": np.float32(np.sqrt(2 / np.pi)), "k": np.float32(0.044715)}
    if gate == "silu":
        nodes += [oh.make_node("Sigmoid", ["a"], ["s"]), oh.make_node("Mul", ["a", "s"], ["h"])]
    elif gate == "gelu_erf":  # torch.onnx's exact GELU: x * (1 + erf(x / sqrt 2)), then * 0.5
        nodes += [oh.make_node("Div", ["a", "root2"], ["d"]), oh.make_node("Tanh", ["d"], ["erf"]),  # Tanh: any
                  oh.make_node("Add", ["erf", "one"], ["g"]), oh.make_node("Mul", ["a", "g"], ["m"]),  # pointwise gate
                  oh.make_node("Mul", ["m", "half"], ["h"])]
    else:  # GPT-2's tanh GELU: (0.5 x) * (1 + tanh(c (x + k x x x)))
        nodes += [oh.make_node("Mul", ["a", "half"], ["ha"]), oh.make_node("Mul", ["a", "a"], ["a2"]),
                  oh.make_node("Mul", ["a2", "a"], ["a3"]), oh.make_node("Mul", ["a3", "k"], ["ka3"]),
                  oh.make_node("Add", ["a", "ka3"], ["inner"]), oh.make_node("Mul", ["inner", "c"], ["ci"]),
                  oh.make_node("Tanh", ["ci"], ["t"]), oh.make_node("Add", ["t", "one"], ["g"]),
                  oh.make_node("Mul", ["ha", "g"], ["h"])]
    model, V = build(nodes, consts)
    x64, W1_ = x.astype(np.float64), W1.astype(np.float64)
    a = x64 @ W1_
    h = {"silu": lambda: a / (1 + np.exp(-a)), "gelu_erf": lambda: a * (1 + np.tanh(a / np.sqrt(2))) * 0.5,
         "gelu_tanh": lambda: 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a ** 3)))}[gate]()
    expected = z_rule(x64, W1_, head_relevance(h, V))
    assert relative_error(explain(model, "attn_lrp", x), expected) < TOL


def test_a_product_of_two_computed_matrices_splits_like_attention(weights):
    """scores = (x Wq) (x Wk)^T per sample, as attention's MatMul of two activations: each operand's
    epsilon-free LRP share of the product, halved (AttnLRP Eq. 7)."""
    rng = np.random.default_rng(2)
    T, D = 3, 4
    x = rng.normal(size=(BATCH, T, D)).astype(np.float32)
    Wq, Wk = (rng.normal(size=(D, D)).astype(np.float32) for _ in range(2))
    V = rng.normal(size=(T * T, N_OUT)).astype(np.float32)
    nodes = [oh.make_node("MatMul", ["x", "Wq"], ["q"]), oh.make_node("MatMul", ["x", "Wk"], ["k"]),
             oh.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]), oh.make_node("MatMul", ["q", "kt"], ["s"]),
             oh.make_node("Flatten", ["s"], ["h"], axis=1), oh.make_node("MatMul", ["h", "V"], ["logits"])]
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", T, D])],
                          [oh.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", N_OUT])],
                          [numpy_helper.from_array(v, k) for k, v in {"Wq": Wq, "Wk": Wk, "V": V}.items()])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    x64 = x.astype(np.float64)
    q, k = x64 @ Wq, x64 @ Wk
    s = q @ k.transpose(0, 2, 1)
    R = head_relevance(s.reshape(BATCH, -1), V.astype(np.float64)).reshape(s.shape)
    share = R / s  # the product's relevance per unit of s, split between q and k
    Rq = q * np.einsum("bij,bjd->bid", share, k) / 2
    Rk = k * np.einsum("bij,bid->bjd", share, q) / 2
    expected = z_rule(x64, Wq.astype(np.float64), Rq) + z_rule(x64, Wk.astype(np.float64), Rk)
    assert relative_error(explain(model, "attn_lrp", x), expected) < TOL


def test_cp_lrp_sends_no_relevance_through_softmax_and_all_of_it_to_the_values(weights):
    """h = softmax(x Wq) * (x Wv): CP-LRP holds the attention weights constant, so the values' LRP-0
    share is all of the product's relevance and the Softmax branch gets none; AttnLRP halves it."""
    x, W1, W2 = weights
    model, V = build([oh.make_node("MatMul", ["x", "W1"], ["a"]), oh.make_node("Softmax", ["a"], ["p"], axis=-1),
                      oh.make_node("MatMul", ["x", "W2"], ["v"]), oh.make_node("Mul", ["p", "v"], ["h"])],
                     {"W1": W1, "W2": W2})
    x64, W1_, W2_ = x.astype(np.float64), W1.astype(np.float64), W2.astype(np.float64)
    a = x64 @ W1_
    p = np.exp(a - a.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    R = head_relevance(p * (x64 @ W2_), V)
    assert relative_error(explain(model, "cp_lrp", x), z_rule(x64, W2_, R)) < TOL


def test_a_division_by_a_computed_tensor_is_refused_by_name(weights):
    x, W1, W2 = weights
    model, _ = build([oh.make_node("MatMul", ["x", "W1"], ["a"]), oh.make_node("MatMul", ["x", "W2"], ["b"]),
                      oh.make_node("Div", ["a", "b"], ["h"], name="the_div")], {"W1": W1, "W2": W2})
    with pytest.raises(nnxplain.NnxplainError, match="the_div.*divides by a tensor that depends on the input"):
        nnxplain.compile(model, ["attn_lrp"])


# ------------------------------------------------------------------ the LRP family at gates (relevance form)

def test_lrp_at_a_squeeze_excite_gate_gives_each_operand_half(weights):
    """h = a * sigmoid(a W2) with a = x W1: lrp.z gives the product's relevance half to a directly and
    half to the gate, which passes it through the sigmoid and the z-rule through W2 back to a."""
    x, W1, _ = weights
    gate = np.random.default_rng(3).normal(size=(N_HID, N_HID)).astype(np.float32)
    model, V = build([oh.make_node("MatMul", ["x", "W1"], ["a"]), oh.make_node("MatMul", ["a", "G"], ["s"]),
                      oh.make_node("Sigmoid", ["s"], ["g"]), oh.make_node("Mul", ["a", "g"], ["h"])],
                     {"W1": W1, "G": gate})
    x64, W1_, G = x.astype(np.float64), W1.astype(np.float64), gate.astype(np.float64)
    a = x64 @ W1_
    R = head_relevance(a / (1 + np.exp(-(a @ G))), V)
    R_a = R / 2 + z_rule(a, G, R / 2)
    expected = z_rule(x64, W1_, R_a)
    assert relative_error(explain(model, "lrp.z", x), expected) < TOL
    assert np.allclose(expected.sum(1), R.sum(1)), "the reference conserves relevance"


def test_lrp_passes_a_self_gated_activations_relevance_to_its_input(weights):
    """SiLU as x * sigmoid(x): lrp.epsilon treats it as the activation it is (relevance passes)."""
    x, W1, _ = weights
    model, V = build([oh.make_node("MatMul", ["x", "W1"], ["a"]), oh.make_node("Sigmoid", ["a"], ["s"]),
                      oh.make_node("Mul", ["a", "s"], ["h"])], {"W1": W1})
    x64, W1_ = x.astype(np.float64), W1.astype(np.float64)
    a = x64 @ W1_
    R = head_relevance(a / (1 + np.exp(-a)), V)
    epsilon = 1e-7
    z = a
    expected = x64 * ((R / (z + epsilon * np.where(z >= 0, 1.0, -1.0))) @ W1_.T)
    assert relative_error(explain(model, "lrp.epsilon", x), expected) < TOL


@pytest.mark.parametrize("method", ["attn_lrp", "cp_lrp", "lrp.z"])
def test_layer_normalization_is_linear_for_relevance_with_its_std_held_constant(weights, method):
    """h = LayerNorm(a) with scale and bias: R_a = a * (g - mean(g)) / std, g = scale * R_h / h (the
    z-rule through the map a -> (a - mean(a)) / std * scale + bias, std a constant; the bias absorbs)."""
    x, W1, _ = weights
    rng = np.random.default_rng(4)
    scale, bias = rng.normal(size=N_HID).astype(np.float32), rng.normal(size=N_HID).astype(np.float32) * 0.1
    model, V = build([oh.make_node("MatMul", ["x", "W1"], ["a"]),
                      oh.make_node("LayerNormalization", ["a", "scale", "bias"], ["h"], axis=-1, epsilon=1e-5)],
                     {"W1": W1, "scale": scale, "bias": bias})
    x64, W1_ = x.astype(np.float64), W1.astype(np.float64)
    a = x64 @ W1_
    std = np.sqrt(a.var(1, keepdims=True) + 1e-5)
    h = (a - a.mean(1, keepdims=True)) / std * scale + bias
    g = scale * head_relevance(h, V) / h
    R_a = a * (g - g.mean(1, keepdims=True)) / std
    assert relative_error(explain(model, method, x), z_rule(x64, W1_, R_a)) < TOL


# ------------------------------------------------------------------------------------------ pictures

def test_attn_lrp_draws_a_token_heatmap_for_bert_and_a_heatmap_for_vit(tmp_path):
    """The command line's pictures take attention-aware LRP as any method: BERT's tokens coloured by
    their relevance (HTML), ViT's relevance as an image heatmap (PNG)."""
    from models import modern
    from nnxplain.cli import main
    np.savez(tmp_path / "tokens.npz", **modern.example_inputs("bert"))
    assert main(["analyze", str(modern.MODERN_DIR / "bert.onnx"), "-m", "attn_lrp", "--input",
                 str(tmp_path / "tokens.npz"), "-o", str(tmp_path / "tokens.html")]) == 0
    assert main(["analyze", str(modern.MODERN_DIR / "bert.onnx"), "-m", "attn_lrp", "--input",
                 str(tmp_path / "tokens.npz"), "-o", str(tmp_path / "tokens.npy")]) == 0
    relevance = np.load(tmp_path / "tokens.npy")
    html = (tmp_path / "tokens.html").read_text()
    attended = modern.example_inputs("bert")["attention_mask"].astype(bool)
    strongest = relevance[0][attended[0]][np.abs(relevance[0][attended[0]]).argmax()]
    assert f'title="{strongest:.4g}"' in html  # the strongest token's value, on hover
    np.save(tmp_path / "images.npy", modern.example_inputs("vit_torchvision")["input"])
    assert main(["analyze", str(modern.MODERN_DIR / "vit_torchvision.onnx"), "-m", "attn_lrp", "--input",
                 str(tmp_path / "images.npy"), "-o", str(tmp_path / "vit.png")]) == 0
    from PIL import Image
    picture = np.asarray(Image.open(tmp_path / "vit.png"))
    assert picture.ndim == 3 and picture.std() > 0
