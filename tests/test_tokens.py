"""Token models (int64 ids in) are explained with respect to their word embeddings: the output of the
embedding lookup. The explainer keeps the model's int inputs as its inputs; `<method>` is the
relevance per token [batch, seq] (summed over the hidden dimension), `<method>/per_dimension` the
unsummed [batch, seq, hidden] on request. Oracles: torch autograd on the embedding output and
Captum's LayerIntegratedGradients / LayerGradientXActivation on the embedding layer."""
import numpy as np
import onnx
import pytest
import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients, NoiseTunnel

import nnxplain
from nnxplain.cli import main
from nnxplain.errors import NnxplainError
from nnxplain.runtime import session
from nnxplain.sampling import noise

from conftest import relative_error

TOL = 1e-5
VOCAB, HIDDEN, TYPES, POSITIONS, CLASSES = 20, 8, 2, 16, 3
PAD = 0


class TokenNet(torch.nn.Module):
    """BERT's embeddings (word + position + token type, summed) under a small masked-mean head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.word = torch.nn.Embedding(VOCAB, HIDDEN)
        self.position = torch.nn.Embedding(POSITIONS, HIDDEN)
        self.token_type = torch.nn.Embedding(TYPES, HIDDEN)
        self.dense = torch.nn.Linear(HIDDEN, HIDDEN)
        self.head = torch.nn.Linear(HIDDEN, CLASSES)

    def forward(self, input_ids, attention_mask, token_type_ids):
        positions = torch.arange(input_ids.shape[1])
        h = self.word(input_ids) + self.position(positions)[None] + self.token_type(token_type_ids)
        h = torch.tanh(self.dense(h))
        mask = attention_mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * mask).sum(1) / mask.sum(1))


NAMES = ["input_ids", "attention_mask", "token_type_ids"]


@pytest.fixture(scope="module")
def token_model(tmp_path_factory):
    net = TokenNet().eval()
    path = tmp_path_factory.mktemp("tokens") / "tokens.onnx"
    example = tokens(2, 5)
    torch.onnx.export(net, tuple(example[n] for n in NAMES), str(path), dynamo=False, opset_version=17,
                      input_names=NAMES, output_names=["logits"],
                      dynamic_axes={n: {0: "batch", 1: "sequence"} for n in NAMES} | {"logits": {0: "batch"}})
    return net, path


def tokens(batch, seq, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[0, -2:] = 0  # the first sample padded
    ids[0, -2:] = PAD
    types = torch.zeros(batch, seq, dtype=torch.int64)
    types[:, seq // 2:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def explain(path, method, feeds, **kwargs):
    model = nnxplain.compile(path, [method], **kwargs)
    sess = session(model)
    names = [o.name for o in model.graph.output]
    outputs = sess.run(None, {k: v.numpy() for k, v in feeds.items()})
    return dict(zip(names, outputs)), model


def targets(net, feeds):
    with torch.no_grad():
        return net(*(feeds[n] for n in NAMES)).argmax(1)


def embedding_gradient(net, feeds, target):
    """d logit[target] / d word embedding, by torch autograd on the embedding output."""
    store = {}

    def keep(module, args, out):
        out.retain_grad()
        store["e"] = out
    handle = net.word.register_forward_hook(keep)
    y = net(*(feeds[n] for n in NAMES))
    handle.remove()
    y.gather(1, target[:, None]).sum().backward()
    return store["e"].grad.detach().numpy(), store["e"].detach().numpy()


def test_the_explainer_keeps_the_int_inputs_and_answers_per_token(token_model):
    net, path = token_model
    feeds = tokens(3, 7)
    out, model = explain(path, "gradient", feeds, per_dimension=True)
    assert [i.name for i in model.graph.input] == NAMES
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.INT64 for i in model.graph.input)
    grad, _ = embedding_gradient(net, feeds, targets(net, feeds))
    assert out["gradient"].shape == (3, 7) and out["gradient/per_dimension"].shape == (3, 7, HIDDEN)
    assert relative_error(out["gradient/per_dimension"], grad) < TOL
    assert relative_error(out["gradient"], grad.sum(-1)) < TOL


def test_input_t_gradient_equals_captum_layer_gradient_x_activation(token_model):
    net, path = token_model
    feeds = tokens(2, 6)
    target = targets(net, feeds)
    expected = LayerGradientXActivation(net, net.word).attribute(tuple(feeds[n] for n in NAMES), target=target)
    out, _ = explain(path, "input_t_gradient", feeds, per_dimension=True)
    assert relative_error(out["input_t_gradient/per_dimension"], expected.detach().numpy()) < TOL
    assert relative_error(out["input_t_gradient"], expected.sum(-1).detach().numpy()) < TOL


def test_integrated_gradients_equals_captum_layer_integrated_gradients(token_model):
    """From the pad token's embedding to the ids' embedding at every position; the position and type
    embeddings and the mask stay as they are for every point of the path."""
    net, path = token_model
    feeds = tokens(2, 6)
    target = targets(net, feeds)
    ids, mask, types = (feeds[n] for n in NAMES)
    expected = LayerIntegratedGradients(net, net.word).attribute(
        (ids, mask, types), baselines=(torch.full_like(ids, PAD), mask, types), target=target, n_steps=16,
        method="riemann_right").detach().numpy()
    out, _ = explain(path, "integrated_gradients", feeds, per_dimension=True,
                     params={"steps": 16, "reference_token": PAD})
    assert relative_error(out["integrated_gradients/per_dimension"], expected) < TOL
    assert relative_error(out["integrated_gradients"], expected.sum(-1)) < TOL


def test_integrated_gradients_from_zero_embeddings(token_model):
    """Without reference_token the path starts at reference_inputs (0) in embedding space: the mean
    gradient at alpha * embedding, alpha = k/steps, times the embedding (torch autograd, the word
    embedding's output scaled by a hook)."""
    net, path = token_model
    feeds = tokens(2, 6)
    target = targets(net, feeds)
    steps, grads = 8, []
    for k in range(1, steps + 1):
        handle = net.word.register_forward_hook(lambda module, args, out: out * (k / steps))
        grad, _ = embedding_gradient(net, feeds, target)  # the gradient at the scaled embedding
        handle.remove()
        grads.append(grad)
    with torch.no_grad():
        embedding = net.word(feeds["input_ids"]).numpy()
    expected = np.mean(grads, axis=0) * embedding
    out, _ = explain(path, "integrated_gradients", feeds, params={"steps": steps})
    assert relative_error(out["integrated_gradients"], expected.sum(-1)) < TOL


@pytest.mark.parametrize("method, source", [("smoothgrad", "graph"), ("smoothgrad", "input"), ("vargrad", "graph")])
def test_noise_methods_add_the_noise_to_the_embedding(token_model, method, source):
    """The noise lives in embedding space, [samples, seq, hidden] for every sample of the batch (the
    sequence length known at run time only); mask, type and position embeddings stay as they are."""
    net, path = token_model
    feeds = tokens(2, 5)
    target = targets(net, feeds)
    unit = noise((6, 2, 5, HIDDEN), seed=7)
    grads = []
    for k in range(6):
        handle = net.word.register_forward_hook(lambda module, args, out: out + 0.5 * torch.from_numpy(unit[k]))
        grad, _ = embedding_gradient(net, feeds, target)
        handle.remove()
        grads.append(grad)
    grads = np.asarray(grads, np.float64)
    expected = grads.mean(0) if method == "smoothgrad" else (grads ** 2).mean(0) - grads.mean(0) ** 2
    params = {"augment_by_n": 6, "noise_scale": 0.5, "seed": 7, "noise": source}
    model = nnxplain.compile(path, [method], params=params, per_dimension=True)
    analyzer_feeds = {k: v.numpy() for k, v in feeds.items()}
    analyzer = nnxplain.create_analyzer(method, path, per_dimension=True, **params)
    assert relative_error(analyzer.analyze(analyzer_feeds), expected) < TOL  # the noise fed where it is an input
    if source == "graph":
        out = dict(zip([o.name for o in model.graph.output], session(model).run(None, analyzer_feeds)))
        assert relative_error(out[method], expected.sum(-1)) < TOL


def test_the_word_embedding_is_the_default_and_wrt_chooses_another(token_model):
    """Two lookups read int inputs (word: 20 rows; token type: 2); the position lookup's indices come
    from the ids' shape, so it is no lookup of an input. The largest table is the default."""
    net, path = token_model
    feeds = tokens(2, 4)
    default, model = explain(path, "gradient", feeds)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["nnxplain.explained_inputs"] == '["input_ids"]'
    by_input, _ = explain(path, "gradient", feeds, wrt="input_ids")
    assert np.array_equal(default["gradient"], by_input["gradient"])
    # the token-type embedding: its gradient is the word embedding's (both are summed into h)
    by_type, model = explain(path, "gradient", feeds, wrt="token_type_ids")
    assert np.allclose(by_type["gradient"], default["gradient"], rtol=1e-6, atol=1e-7)
    table = next(i.name for i in model.graph.initializer if list(i.dims) == [TYPES, HIDDEN])
    by_table, _ = explain(path, "input_t_gradient", feeds, wrt=table)
    with torch.no_grad():
        type_embedding = net.token_type(feeds["token_type_ids"]).numpy()
    grad, _ = embedding_gradient(net, feeds, targets(net, feeds))
    assert relative_error(by_table["input_t_gradient"], (grad * type_embedding).sum(-1)) < TOL


def test_wrt_errors_name_the_choices(token_model):
    _, path = token_model
    with pytest.raises(NnxplainError, match=r"wrt 'attention_mask' names no float input .*embedding lookups "
                                            r"\(int input / table / output\): input_ids / .*token_type_ids / "):
        nnxplain.compile(path, ["gradient"], wrt="attention_mask")
    with pytest.raises(NnxplainError, match="reference_token 20 is out of range: the embedding table has 20 rows"):
        nnxplain.compile(path, ["integrated_gradients"], params={"reference_token": VOCAB})


def test_a_model_with_int_inputs_and_no_lookup_is_refused_clearly(tmp_path):
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Cast", ["ids"], ["y"], to=TensorProto.FLOAT)], "g",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    path = tmp_path / "ids.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(NnxplainError, match="no float input to explain, and no embedding lookup"):
        nnxplain.compile(path, ["gradient"])


def test_cli_compiles_a_token_model_with_wrt_and_per_dimension(token_model, tmp_path, capsys):
    _, path = token_model
    out = tmp_path / "e.onnx"
    assert main(["compile", str(path), "-m", "integrated_gradients", "-p", "reference_token=0", "--wrt", "input_ids",
                 "--per-dimension", "-o", str(out)]) == 0
    assert "outputs: logits, integrated_gradients/per_dimension, integrated_gradients" in capsys.readouterr().out
    assert main(["compile", str(path), "-m", "gradient", "--wrt", "nothing", "-o", str(out)]) == 2
    assert "nnxplain: error: wrt 'nothing' names no float input" in capsys.readouterr().err


class CausalNet(torch.nn.Module):
    """GPT-2's embedding: the ids reshaped to [-1, seq] before the lookup (the exported Reshape leaves
    the lookup's batch dim unnamed), plus position embeddings from the length; a mean head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.wte, self.wpe = torch.nn.Embedding(VOCAB, HIDDEN), torch.nn.Embedding(POSITIONS, HIDDEN)
        self.head = torch.nn.Linear(HIDDEN, CLASSES)

    def forward(self, input_ids, attention_mask):
        ids = input_ids.view(-1, input_ids.shape[-1])
        h = torch.tanh(self.wte(ids) + self.wpe(torch.arange(ids.shape[-1]))[None])
        h = h * attention_mask.unsqueeze(-1).to(h.dtype)
        return self.head(h.mean(1))


def test_a_reshaped_ids_lookup_keeps_the_inputs_batch_dim(tmp_path):
    net = CausalNet().eval()
    path = tmp_path / "causal.onnx"
    names = ["input_ids", "attention_mask"]
    example = tokens(2, 5)
    torch.onnx.export(net, tuple(example[n] for n in names), str(path), dynamo=False, opset_version=17,
                      input_names=names, output_names=["logits"],
                      dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}})
    assert any(n.op_type == "Reshape" for n in onnx.load(path).graph.node)
    feeds = {n: tokens(3, 6)[n] for n in names}
    target = net(*(feeds[n] for n in names)).argmax(1)
    expected = LayerIntegratedGradients(net, net.wte).attribute(
        tuple(feeds[n] for n in names), baselines=(torch.full_like(feeds["input_ids"], PAD), feeds["attention_mask"]),
        target=target, n_steps=8, method="riemann_right").detach().numpy()
    out, model = explain(path, "integrated_gradients", feeds, params={"steps": 8, "reference_token": PAD})
    assert relative_error(out["integrated_gradients"], expected.sum(-1)) < TOL
    declared = next(o for o in model.graph.output if o.name == "integrated_gradients").type.tensor_type.shape.dim
    assert [d.dim_param for d in declared] == ["batch", "sequence"]
