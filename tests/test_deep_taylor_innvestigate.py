"""`deep_taylor` and `deep_taylor.bounded` against iNNvestigate 2.1.2's DeepTaylor / BoundedDeepTaylor.

iNNvestigate needs TensorFlow, which the test environment does not install; the oracle is an
independent float64 numpy reference written from iNNvestigate's source
(src/innvestigate/analyzer/deeptaylor.py and relevance_based/relevance_rule.py of v2.1.2):

- the model gets a ReLU on its output (`_prepare_model`); relevance starts as that value at the
  selected (largest) output;
- every kernel layer (Dense, Conv), the linear output layer included, uses Alpha1Beta0IgnoreBiasRule:
  Z = conv(x+, W+) + conv(x-, W-) without bias, R_in = x+ * conv^T(R / Z, W+) + x- * conv^T(R / Z, W-),
  the division iNNvestigate's safe_divide (Z + 1e-7 where Z == 0);
- BoundedDeepTaylor's first kernel layer uses BoundedRule (z^B, no bias);
- a ReLU layer, (global) average pooling, max pooling, Add and Flatten use the plain gradient
  (`_gradient_reverse_mapping`): average pooling gives R / k to every input of a window of k, global
  average pooling R / (H * W), Add copies R into both branches;
- BatchNormalization uses WSquareRule on the fused (elementwise) layer: R passes where the scale is
  not 0.

The layers are separate Keras layers (a Conv2D without activation followed by a ReLU layer), which
is what an ONNX graph shows: a Keras Conv2D(activation="relu") would make iNNvestigate skip the
ReLU's gradient (its rule reads the relevance after the activation), which changes the result only
where a gradient step (average pooling, Add) hands relevance to a unit the ReLU set to 0.
"""
import numpy as np
import pytest
import torch
from torch import nn

import nnxplain
from nnxplain.runtime import session

from conftest import relative_error

TOL = 1e-5
SAFE = 1e-7


# ------------------------------------------------------------------ the numpy reference

def im2col(x, k, pad):
    """[N, C, H, W] -> patches [N, H*W, C*k*k] for a stride-1 'same' convolution (odd k, pad = k // 2)."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((n, h, w, c, k, k))
    for i in range(k):
        for j in range(k):
            cols[:, :, :, :, i, j] = xp[:, :, i:i + h, j:j + w].transpose(0, 2, 3, 1)
    return cols.reshape(n, h * w, c * k * k)


def col2im(cols, shape, k, pad):
    n, c, h, w = shape
    cols = cols.reshape(n, h, w, c, k, k)
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad))
    for i in range(k):
        for j in range(k):
            xp[:, :, i:i + h, j:j + w] += cols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return xp[:, :, pad:pad + h, pad:pad + w]


class Conv:
    def __init__(self, w, b):
        self.w, self.b = w, b
        self.k = w.shape[-1]

    def apply(self, x, w, bias=True):
        n, _, h, wd = x.shape
        out = im2col(x, self.k, self.k // 2) @ w.reshape(len(w), -1).T          # [N, H*W, O]
        out = out.transpose(0, 2, 1).reshape(n, len(w), h, wd)
        return out + self.b[None, :, None, None] if bias else out

    def transpose(self, s, w, shape):
        cols = s.reshape(s.shape[0], s.shape[1], -1).transpose(0, 2, 1) @ w.reshape(len(w), -1)
        return col2im(cols, shape, self.k, self.k // 2)


class Dense:
    def __init__(self, w, b):
        self.w, self.b = w, b  # w: [out, in]

    def apply(self, x, w, bias=True):
        return x @ w.T + (self.b if bias else 0)

    def transpose(self, s, w, shape):
        return s @ w


def z_plus(layer, x, r):
    """Alpha1Beta0IgnoreBiasRule."""
    wp, wn = layer.w * (layer.w > 0), layer.w * (layer.w < 0)
    xp, xn = np.maximum(x, 0), np.minimum(x, 0)
    z = layer.apply(xp, wp, bias=False) + layer.apply(xn, wn, bias=False)
    s = r / (z + (z == 0) * SAFE)
    return xp * layer.transpose(s, wp, x.shape) + xn * layer.transpose(s, wn, x.shape)


def z_bounded(layer, x, r, low, high):
    """BoundedRule (z^B), no bias."""
    wp, wn = layer.w * (layer.w > 0), layer.w * (layer.w < 0)
    lo, hi = np.full_like(x, low), np.full_like(x, high)
    z = layer.apply(x, layer.w, bias=False) - (layer.apply(lo, wp, bias=False) + layer.apply(hi, wn, bias=False))
    s = r / (z + (z == 0) * SAFE)
    return x * layer.transpose(s, layer.w, x.shape) - (lo * layer.transpose(s, wp, x.shape)
                                                        + hi * layer.transpose(s, wn, x.shape))


def avgpool(x, k):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // k, k, w // k, k).mean((3, 5))


def maxpool(x, k):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // k, k, w // k, k).max((3, 5))


def maxpool_route(x, r, k):
    """The gradient of max pooling: the window's relevance to its largest input."""
    n, c, h, w = x.shape
    windows = x.reshape(n, c, h // k, k, w // k, k)
    winner = windows == windows.max((3, 5), keepdims=True)
    return (winner * r[:, :, :, None, :, None]).reshape(n, c, h, w)


def reference(layers, x, low=None, high=None):
    """iNNvestigate's DeepTaylor (BoundedDeepTaylor with low/high) on a layer list
    [(name, kind, inputs, arg)], the last layer the output; float64."""
    acts = {"input": x.astype(np.float64)}
    for name, kind, ins, arg in layers:
        a = [acts[i] for i in ins]
        if kind in ("conv", "dense"):
            acts[name] = arg.apply(a[0], arg.w)
        elif kind == "relu":
            acts[name] = np.maximum(a[0], 0)
        elif kind == "avgpool":
            acts[name] = avgpool(a[0], arg)
        elif kind == "maxpool":
            acts[name] = maxpool(a[0], arg)
        elif kind == "gap":
            acts[name] = a[0].mean((2, 3))
        elif kind == "flatten":
            acts[name] = a[0].reshape(len(a[0]), -1)
        elif kind == "add":
            acts[name] = a[0] + a[1]
        elif kind == "bn":
            scale, shift = arg
            acts[name] = a[0] * scale[None, :, None, None] + shift[None, :, None, None]
    out = layers[-1][0]
    y = np.maximum(acts[out], 0)                      # _prepare_model: a ReLU on the output
    rel = {out: np.where(np.arange(y.shape[1]) == y.argmax(1)[:, None], y, 0.0)}
    for name, kind, ins, arg in reversed(layers):
        r = rel.pop(name)
        a = [acts[i] for i in ins]
        if kind in ("conv", "dense"):
            first = ins == ["input"] and low is not None
            back = [z_bounded(arg, a[0], r, low, high) if first else z_plus(arg, a[0], r)]
        elif kind == "relu":
            back = [r * (a[0] > 0)]
        elif kind == "avgpool":
            back = [np.repeat(np.repeat(r, arg, 2), arg, 3) / arg ** 2]
        elif kind == "maxpool":
            back = [maxpool_route(a[0], r, arg)]
        elif kind == "gap":
            back = [np.broadcast_to(r[:, :, None, None], a[0].shape) / (a[0].shape[2] * a[0].shape[3])]
        elif kind == "flatten":
            back = [r.reshape(a[0].shape)]
        elif kind == "add":
            back = [r, r]
        elif kind == "bn":
            back = [r * (arg[0] != 0)[None, :, None, None]]
        for i, b in zip(ins, back):
            rel[i] = rel.get(i, 0) + b
    return rel["input"]


# ------------------------------------------------------------------ the networks, in torch and as layer lists

def numpy_of(module):
    return module.weight.detach().double().numpy(), module.bias.detach().double().numpy()


class PoolNet(nn.Module):
    """Average pooling, max pooling and global average pooling between ReLU convolutions."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(6, 8, 3, padding=1)
        self.d1, self.d2 = nn.Linear(8, 16), nn.Linear(16, 5)

    def forward(self, x):
        h = nn.functional.avg_pool2d(torch.relu(self.c1(x)), 2)
        h = nn.functional.max_pool2d(torch.relu(self.c2(h)), 2)
        h = torch.relu(self.c3(h)).mean((2, 3))
        return self.d2(torch.relu(self.d1(h)))

    def layers(self):
        return [("c1", "conv", ["input"], Conv(*numpy_of(self.c1))), ("r1", "relu", ["c1"], None),
                ("p1", "avgpool", ["r1"], 2), ("c2", "conv", ["p1"], Conv(*numpy_of(self.c2))),
                ("r2", "relu", ["c2"], None), ("p2", "maxpool", ["r2"], 2),
                ("c3", "conv", ["p2"], Conv(*numpy_of(self.c3))), ("r3", "relu", ["c3"], None),
                ("g", "gap", ["r3"], None), ("d1", "dense", ["g"], Dense(*numpy_of(self.d1))),
                ("r4", "relu", ["d1"], None), ("d2", "dense", ["r4"], Dense(*numpy_of(self.d2)))]


class ResidualNet(nn.Module):
    """A residual block (the Add copies relevance into both branches), a BatchNormalization after the
    Add that cannot be folded into a layer, average pooling, a dense output layer."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(-1.0, 2.0)
            self.bn.weight[1] = 0.0  # a channel the BatchNormalization zeroes: w^2 passes no relevance there
            self.bn.bias.uniform_(-0.5, 0.5)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        h = torch.relu(self.bn(h + self.c3(torch.relu(self.c2(h)))))
        return self.fc(nn.functional.avg_pool2d(h, 2).flatten(1))

    def layers(self):
        scale = (self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)).detach().double().numpy()
        shift = self.bn.bias.detach().double().numpy() - self.bn.running_mean.double().numpy() * scale
        return [("c1", "conv", ["input"], Conv(*numpy_of(self.c1))), ("r1", "relu", ["c1"], None),
                ("c2", "conv", ["r1"], Conv(*numpy_of(self.c2))), ("r2", "relu", ["c2"], None),
                ("c3", "conv", ["r2"], Conv(*numpy_of(self.c3))), ("add", "add", ["r1", "c3"], None),
                ("bn", "bn", ["add"], (scale, shift)), ("r3", "relu", ["bn"], None),
                ("p", "avgpool", ["r3"], 2), ("f", "flatten", ["p"], None),
                ("fc", "dense", ["f"], Dense(*numpy_of(self.fc)))]


NETS = {"pool": (PoolNet, (1, 8, 8)), "residual": (ResidualNet, (2, 8, 8))}


def build(name, tmp_path, seed=0):
    torch.manual_seed(seed)
    cls, shape = NETS[name]
    net = cls().eval()
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(net, (torch.randn(1, *shape),), str(path), dynamo=False, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return net, path


def explain(path, method, x, **params):
    model = nnxplain.compile(path, [method], params=params)
    return session(model).run([method], {"input": x.astype(np.float32)})[0]


@pytest.mark.parametrize("name", sorted(NETS))
def test_deep_taylor_equals_innvestigate(name, tmp_path):
    net, path = build(name, tmp_path)
    x = np.random.default_rng(1).standard_normal((6,) + NETS[name][1])
    expected = reference(net.layers(), x)
    assert np.abs(expected).sum() > 0
    assert relative_error(explain(path, "deep_taylor", x), expected) < TOL


@pytest.mark.parametrize("name", sorted(NETS))
def test_bounded_deep_taylor_equals_innvestigate(name, tmp_path):
    net, path = build(name, tmp_path)
    x = np.clip(np.random.default_rng(2).standard_normal((6,) + NETS[name][1]), -2, 2)
    expected = reference(net.layers(), x, low=-2.0, high=2.0)
    assert relative_error(explain(path, "deep_taylor.bounded", x, low=-2.0, high=2.0), expected) < TOL


@pytest.mark.parametrize("name", sorted(NETS))
def test_the_conservative_variant_differs_where_innvestigate_is_not_conservative(name, tmp_path):
    """deep_taylor.conservative shares relevance at pooling and Add by the contributions. On the pooling
    network its input relevance sums to the explained (positive) output, iNNvestigate's does not
    (on the residual one the BatchNormalization's shift absorbs a share under the z-rule)."""
    net, path = build(name, tmp_path)
    x = np.random.default_rng(1).standard_normal((6,) + NETS[name][1]).astype(np.float32)
    y = np.maximum(session(str(path)).run(None, {"input": x})[0].max(1), 0)
    conservative = explain(path, "deep_taylor.conservative", x)
    innvestigate = explain(path, "deep_taylor", x)
    if name == "pool":
        assert relative_error(conservative.reshape(6, -1).sum(1), y) < TOL
    assert relative_error(innvestigate.reshape(6, -1).sum(1), y) > 0.05
    assert relative_error(conservative, innvestigate) > 0.05


def test_deep_taylor_refuses_other_activations_as_innvestigate_does():
    from conftest import ZOO_DIR
    with pytest.raises(nnxplain.NnxplainError, match=r"Sigmoid.*Deep Taylor supports ReLU activations only"):
        nnxplain.compile(ZOO_DIR / "mlp.onnx", ["deep_taylor"])
    nnxplain.compile(ZOO_DIR / "mlp.onnx", ["deep_taylor.conservative"])  # passes relevance through them
