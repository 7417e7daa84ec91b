"""Occlusion equals Captum's Occlusion on the same weights; LIME recovers the exact segment
contributions of a linear model; both run from the CLI and in the perturbation analysis."""
import numpy as np
import onnx
import pytest
import torch
from captum.attr import Occlusion
from onnx import TensorProto, helper, numpy_helper

from models import zoo
from nnxplain.cli import main
from nnxplain.errors import NnxplainError
from nnxplain.evaluate import evaluate
from nnxplain.perturbation import grid_segments, lime, occlusion, weighted_ridge

from conftest import ZOO_DIR, relative_error

TOL = 1e-5


@pytest.mark.parametrize("name, patch, stride, fill", [("lenet_bn", 4, 2, 0.0), ("resnet", 3, 2, 0.5),
                                                       ("digits_cnn", 2, 1, 0.0)])
def test_occlusion_equals_captum(name, patch, stride, fill):
    net = zoo.twin(name)
    torch.manual_seed(1)
    x = torch.randn(3, *zoo.MODELS[name][1])
    c = x.shape[1]
    target = net(x).argmax(1)
    expected = Occlusion(net).attribute(x, sliding_window_shapes=(c, patch, patch), strides=(1, stride, stride),
                                        baselines=fill, target=target).detach().numpy()
    out = occlusion(ZOO_DIR / f"{name}.onnx", x.numpy(), patch=patch, stride=stride, fill=fill)
    # attributions are differences of two float32 scores: their precision is that of the scores
    scale = net(x).abs().max().item()
    assert np.abs(out - expected).max() < TOL * scale


def linear_model(path, weight):
    """y = flatten(x) @ weight.T: a model whose score is a sum of pixel contributions."""
    k, d = weight.shape
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "W"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "linear", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                              ["batch", 1, 6, 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", k])],
                              [numpy_helper.from_array(weight.astype(np.float32), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, path)


def test_lime_recovers_segment_contributions_of_a_linear_model(tmp_path, rng):
    weight = rng.standard_normal((3, 36))
    linear_model(tmp_path / "linear.onnx", weight)
    x = rng.random((2, 1, 6, 6)).astype(np.float32)
    out = lime(tmp_path / "linear.onnx", x, segment=3, samples=64, alpha=1e-9)
    seg = grid_segments(6, 6, 3)
    target = (x.reshape(2, -1) @ weight.T).argmax(1)
    for b in range(2):
        contribution = x[b, 0] * weight[target[b]].reshape(6, 6)
        expected = np.array([contribution[seg == s].sum() for s in range(4)])[seg]
        assert relative_error(out[b, 0], expected) < 1e-4


def test_weighted_ridge_solves_the_normal_equations(rng):
    z = rng.random((50, 4))
    y = rng.random(50)
    w = rng.random(50)
    coef = weighted_ridge(z, y, w, alpha=0.5)
    design = np.hstack([np.ones((50, 1)), z])
    full = np.linalg.solve(design.T @ np.diag(w) @ design + np.diag([0, .5, .5, .5, .5]), design.T @ (w * y))
    assert np.allclose(coef, full[1:])


def test_occlusion_and_lime_in_the_cli_and_the_evaluation(tmp_path, capsys):
    x = np.load(ZOO_DIR / "digits_test.npz")["x"][:40]
    np.save(tmp_path / "x.npy", x)
    digits = str(ZOO_DIR / "digits_cnn.onnx")
    assert main(["analyze", digits, "-m", "occlusion", "-p", "patch=3", "-i", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "occ.npy")]) == 0
    assert relative_error(np.load(tmp_path / "occ.npy"), occlusion(digits, x, patch=3)) == 0
    assert main(["analyze", digits, "-m", "lime", "-m", "gradient", "-p", "lime.samples=64", "-i",
                 str(tmp_path / "x.npy"), "--grid", str(tmp_path / "grid.png")]) == 0
    assert main(["analyze", digits, "-m", "occlusion", "-p", "patchh=3", "-i", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "bad.npy")]) == 2
    assert "parameter 'patchh'" in capsys.readouterr().err and not (tmp_path / "bad.npy").exists()
    scores = evaluate(digits, ["occlusion", "lime"], x, params={"lime.samples": 64}, progress=False)["aopc"]
    assert scores["occlusion"] > scores["random"] and scores["lime"] > scores["random"]


def test_perturbation_errors():
    with pytest.raises(NnxplainError, match=r"images \[N, C, H, W\]"):
        occlusion(ZOO_DIR / "mlp.onnx", np.zeros((2, 20), np.float32))
    with pytest.raises(NnxplainError, match="patch must be between 1 and 8"):
        occlusion(ZOO_DIR / "digits_cnn.onnx", np.zeros((2, 1, 8, 8), np.float32), patch=9)


def test_occlusion_and_lime_are_method_files_of_kind_perturbation(tmp_path):
    """They are listed, loaded and checked like every method; create_analyzer runs them; a method file
    of their kind with other defaults gives what the built-in one gives with those parameters."""
    import nnxplain
    from nnxplain.methods import load_method
    from nnxplain.perturbation import run
    perturbation = [m for m in nnxplain.methods() if load_method(m).kind == "perturbation"]
    assert perturbation == ["lime", "occlusion"]
    model = ZOO_DIR / "digits_cnn.onnx"
    x = np.load(ZOO_DIR / "digits_test.npz")["x"][:3]
    analyzer = nnxplain.create_analyzer("occlusion", model, patch=3)
    assert np.array_equal(analyzer.analyze(x), occlusion(model, x, patch=3))
    with pytest.raises(NnxplainError, match="method 'occlusion' runs the model on perturbed copies: it has no compiled"):
        analyzer.save(tmp_path / "e.onnx")
    mine = tmp_path / "coarse_lime.toml"
    mine.write_text('description = "LIME on 4x4 segments"\nkind = "perturbation"\nperturbation = "lime"\n'
                    '[params]\nsegment = 4\nsamples = 64\nseed = 3\n')
    assert np.array_equal(run(str(mine), model, x), lime(model, x, segment=4, samples=64, seed=3))
    with pytest.raises(NnxplainError, match="method 'lime' has no parameter 'patch'"):
        run("lime", model, x, {"patch": 2})
    (tmp_path / "bad.toml").write_text('description = "?"\nkind = "perturbation"\nperturbation = "lime"\n'
                                       '[params]\npatch = 2\n')
    with pytest.raises(NnxplainError, match=r"bad.toml: lime has no parameter 'patch' \(its parameters: alpha, fill"):
        load_method(str(tmp_path / "bad.toml"))


def test_evaluate_and_perturbation_do_not_import_each_other():
    import ast
    import nnxplain
    folder = __import__("pathlib").Path(nnxplain.__file__).parent
    for module, other in (("evaluate", "perturbation"), ("perturbation", "evaluate")):
        tree = ast.parse((folder / f"{module}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
        assert other not in imported, f"{module} imports {other}"
