"""A float64 numpy reference of PatternNet / PatternAttribution, written from the paper's equations
with an explicit im2col, independent of the ONNX statistics graph: small networks given as a list
of layers, their forward pass, both estimators, and both backward passes."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper


@dataclass
class Conv:
    w: np.ndarray                 # [K, C/g, kh, kw]
    b: np.ndarray
    stride: int = 1
    pad: int = 0
    dilation: int = 1
    group: int = 1
    name: str = ""


@dataclass
class Dense:
    w: np.ndarray                 # [D, K]: y = alpha * x @ w + b
    b: np.ndarray | None = None
    alpha: float = 1.0
    name: str = ""


RELU, FLATTEN = "relu", "flatten"


@dataclass
class Net:
    layers: list
    input_shape: tuple
    trace: dict = field(default_factory=dict)

    def forward(self, x):
        """Run the net; remember each linear layer's input and pre-activation and each ReLU's output."""
        self.trace = {}
        for i, layer in enumerate(self.layers):
            if layer == RELU:
                x = np.maximum(x, 0)
                self.trace[i] = x
            elif layer == FLATTEN:
                self.trace[i] = x.shape
                x = x.reshape(len(x), -1)
            else:
                self.trace[i] = x
                x = linear(layer, x, bias=True)
        return x

    def backward(self, seed, weight_rows):
        """Propagate `seed` [N, K] back: linear layers transpose with weight_rows(layer) [K, D]
        instead of their weights, ReLUs gate with the forward pass."""
        r = seed
        for i in reversed(range(len(self.layers))):
            layer = self.layers[i]
            if layer == RELU:
                r = r * (self.trace[i] > 0)
            elif layer == FLATTEN:
                r = r.reshape(self.trace[i])
            else:
                r = transpose(layer, self.trace[i], r, weight_rows(layer))
        return r

    def onnx(self) -> onnx.ModelProto:
        nodes, inits, x = [], [], "input"
        for i, layer in enumerate(self.layers):
            out = f"t{i}"
            if layer == RELU:
                nodes.append(helper.make_node("Relu", [x], [out], name=f"relu{i}"))
            elif layer == FLATTEN:
                nodes.append(helper.make_node("Flatten", [x], [out], name=f"flatten{i}", axis=1))
            elif isinstance(layer, Conv):
                inits += [numpy_helper.from_array(layer.w.astype(np.float32), f"w{i}"),
                          numpy_helper.from_array(layer.b.astype(np.float32), f"b{i}")]
                nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [out], name=layer.name,
                                              strides=[layer.stride] * 2, pads=[layer.pad] * 4,
                                              dilations=[layer.dilation] * 2, group=layer.group))
            elif layer.b is None:
                inits.append(numpy_helper.from_array(layer.w.astype(np.float32), f"w{i}"))
                nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [out], name=layer.name))
            else:
                inits += [numpy_helper.from_array(layer.w.astype(np.float32), f"w{i}"),
                          numpy_helper.from_array(layer.b.astype(np.float32), f"b{i}")]
                nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [out], name=layer.name,
                                              alpha=layer.alpha))
            x = out
        graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info(
            "input", onnx.TensorProto.FLOAT, ["batch", *self.input_shape])],
            [helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None)], inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def rows(layer) -> np.ndarray:
    """The layer's weights as [K, D] rows w_k (Dense: alpha included)."""
    if isinstance(layer, Conv):
        return layer.w.reshape(len(layer.w), -1)
    return layer.alpha * layer.w.T


def im2col(layer: Conv, x):
    """[N, C, H, W] -> patches [N, P, group, C/g * kh * kw] and the output size (Ho, Wo)."""
    n, c, h, w = x.shape
    kh, kw = layer.w.shape[2:]
    s, p, d = layer.stride, layer.pad, layer.dilation
    ho, wo = (h + 2 * p - d * (kh - 1) - 1) // s + 1, (w + 2 * p - d * (kw - 1) - 1) // s + 1
    xp = np.pad(x, [(0, 0), (0, 0), (p, p), (p, p)])
    cols = np.empty((n, ho, wo, c, kh, kw))
    for a in range(kh):
        for b in range(kw):
            cols[:, :, :, :, a, b] = xp[:, :, a * d:a * d + s * ho:s, b * d:b * d + s * wo:s].transpose(0, 2, 3, 1)
    g = layer.group
    cols = cols.reshape(n, ho * wo, g, c // g, kh, kw)
    return cols.reshape(n, ho * wo, g, -1), (ho, wo)


def col2im(layer: Conv, cols, shape):
    """The adjoint of im2col: patches [N, P, group, D] summed back into an input of `shape`."""
    n, c, h, w = shape
    kh, kw = layer.w.shape[2:]
    s, p, d = layer.stride, layer.pad, layer.dilation
    ho, wo = (h + 2 * p - d * (kh - 1) - 1) // s + 1, (w + 2 * p - d * (kw - 1) - 1) // s + 1
    cols = cols.reshape(n, ho, wo, c, kh, kw)
    xp = np.zeros((n, c, h + 2 * p, w + 2 * p))
    for a in range(kh):
        for b in range(kw):
            xp[:, :, a * d:a * d + s * ho:s, b * d:b * d + s * wo:s] += cols[:, :, :, :, a, b].transpose(0, 3, 1, 2)
    return xp[:, :, p:p + h, p:p + w]


def samples(layer, x):
    """The layer as K neurons: X [S, K, D] (each neuron's input samples), Y [S, K] without and
    Yb [S, K] with the bias; for a Conv every receptive field is a sample."""
    r = rows(layer)
    if isinstance(layer, Conv):
        cols, _ = im2col(layer, x)
        cols = cols.reshape(-1, layer.group, cols.shape[-1])
        per_group = len(layer.w) // layer.group
        X = np.repeat(cols, per_group, axis=1)                    # [S, K, D]
        b = layer.b
    else:
        X = np.repeat(x[:, None, :], len(r), axis=1)
        b = layer.b if layer.b is not None else np.zeros(len(r))
    Y = np.einsum("skd,kd->sk", X, r)
    return X, Y, Y + b


def linear(layer, x, bias: bool):
    if isinstance(layer, Conv):
        cols, (ho, wo) = im2col(layer, x)
        g, k = layer.group, len(layer.w)
        r = rows(layer).reshape(g, k // g, -1)
        y = np.einsum("npgd,gkd->npgk", cols, r).reshape(len(x), ho * wo, k)
        y = y + (layer.b if bias else 0)
        return y.transpose(0, 2, 1).reshape(len(x), k, ho, wo)
    y = x @ rows(layer).T
    return y + (layer.b if bias and layer.b is not None else 0)


def transpose(layer, x, dy, weight_rows):
    if isinstance(layer, Conv):
        g, k = layer.group, len(layer.w)
        n = len(dy)
        dyp = dy.reshape(n, k, -1).transpose(0, 2, 1).reshape(n, -1, g, k // g)   # [N, P, g, K/g]
        cols = np.einsum("npgk,gkd->npgd", dyp, weight_rows.reshape(g, k // g, -1))
        return col2im(layer, cols, x.shape)
    return dy @ weight_rows


def patterns(layer, x, pattern_type):
    """Eq. 3 (linear) and Eq. 7 (relu: positive regime; relu.negative), in float64."""
    X, Y, Yb = samples(layer, x)
    mask = {"linear": np.ones_like(Yb, bool), "relu": Yb > 0, "relu.negative": Yb <= 0}[pattern_type]
    count = mask.sum(0)                                                # [K]
    ex = np.einsum("sk,skd->kd", mask, X) / np.maximum(count, 1)[:, None]
    exy = np.einsum("sk,skd->kd", mask * Y, X) / np.maximum(count, 1)[:, None]
    cov = exy - ex * Y.mean(0)[:, None]
    denom = np.einsum("kd,kd->k", rows(layer), cov)
    return np.where(denom[:, None] == 0, 0, cov / np.where(denom == 0, 1, denom)[:, None])


def fit(net: Net, data, pattern_type):
    net.forward(data)
    return {layer.name: patterns(layer, net.trace[i], pattern_type)
            for i, layer in enumerate(net.layers) if isinstance(layer, (Conv, Dense))}
