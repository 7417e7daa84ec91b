"""The committed zoo files agree with their torch twins (the test oracle)."""
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from models.zoo import MODELS, MODELS_DIR, has_batchnorm, ort_run, twin


@pytest.mark.parametrize("name", sorted(MODELS))
def test_twin_matches_onnxruntime(name):
    _, shape = MODELS[name]
    path = MODELS_DIR / f"{name}.onnx"
    model = twin(name)
    x = np.random.default_rng(0).normal(size=(3, *shape)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = ort_run(path, x)
    assert got.shape == want.shape
    # rtol too: the trained digits model's logits are large (~10-30).
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_batchnorm_kept_in_graph(name):
    ops = {n.op_type for n in onnx.load(str(MODELS_DIR / f"{name}.onnx")).graph.node}
    assert has_batchnorm(twin(name)) == ("BatchNormalization" in ops)


@pytest.mark.parametrize("name", ["mlp", "resnet", "mobilenet_relu6"])
def test_twin_reads_weights_from_file(name, tmp_path):
    """Perturb and rename initializers: twin must follow the file, not build()."""
    proto = onnx.load(str(MODELS_DIR / f"{name}.onnx"))
    rng = np.random.default_rng(1)
    # Only Conv/Gemm/BN weights can be found by structure (not mlp's MatMul+Add).
    structural = {
        i for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "BatchNormalization") for i in n.input[1:]
    }
    renamed = {}
    for k, t in enumerate(proto.graph.initializer):
        a = numpy_helper.to_array(t)
        a = np.abs(a) + 0.5 if "running_var" in t.name else a + rng.normal(0, 0.05, a.shape)
        new = f"onnx::W_{k}" if k % 2 == 0 and t.name in structural else t.name
        renamed[t.name] = new
        t.CopyFrom(numpy_helper.from_array(a.astype(np.float32), new))
    assert any(old != new for old, new in renamed.items())
    for node in proto.graph.node:
        for i, inp in enumerate(node.input):
            node.input[i] = renamed.get(inp, inp)
    path = tmp_path / f"{name}.onnx"
    onnx.save(proto, str(path))

    _, shape = MODELS[name]
    x = np.random.default_rng(2).normal(size=(3, *shape)).astype(np.float32)
    with torch.no_grad():
        want = twin(name, path)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ort_run(path, x), want, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        original = twin(name)(torch.from_numpy(x)).numpy()
    assert not np.allclose(original, want, atol=1e-3)  # the perturbation mattered


def test_digits_accuracy():
    data = np.load(MODELS_DIR / "digits_test.npz")
    x, y = data["x"], data["y"]
    assert x.dtype == np.float32 and x.shape[1:] == (1, 8, 8) and y.dtype == np.int64
    acc = (ort_run(MODELS_DIR / "digits_cnn.onnx", x).argmax(1) == y).mean()
    assert acc >= 0.95
