"""Op-level correctness of the structural op records of issue 11: normalizations, Softmax and
LogSoftmax inside a graph, Gather / GatherElements, Resize, ConvTranspose, and MatMul / Mul of two
computed tensors. The harness is tests/test_ops.py's (one-op models, gradient against torch
autograd in float64 or float64 finite differences, relative error <= 1e-5); sweeps are seeded."""
from __future__ import annotations

import random

import numpy as np
import onnx_graphsurgeon as gs
import pytest
import torch
import torch.nn.functional as F

from onnx import TensorProto
from onnx.reference import ReferenceEvaluator

import nnxplain
from nnxplain.emitter import Emitter
from nnxplain.ops import RECORDS
from nnxplain.patterns import fit
from nnxplain.runtime import session
from conftest import lrp_methods, relative_error, required_params
from test_ops import error_report  # noqa: F401  (NNXPLAIN_OP_ERRORS=path.json: the largest errors seen)
from test_ops import TOL,  OPSET, Reference, T, case_id, check, explain, node, normal, one_op_model, torch_reference

# ------------------------------------------------------------------------------ normalizations


def layer_norm_cases(count=12, seed=11):
    rnd = random.Random(seed)
    cases = []
    for i in range(count):
        rank = rnd.randint(2, 4)
        axis = rnd.randint(-rank + 1, rank - 1) if i % 4 else 0  # axis 0: the count is the dynamic batch's
        dims = [2] + [rnd.randint(1, 5) for _ in range(rank - 1)]
        while np.prod(dims[axis:]) < 3:  # over 1 or 2 elements the output is constant (0, or -1 and 1)
            dims = [2] + [rnd.randint(1, 5) for _ in range(rank - 1)]
        epsilon = [1e-5, 1e-12, 0.3][i % 3]
        cases.append(pytest.param(dict(dims=dims, axis=axis, epsilon=epsilon, bias=i % 2 == 0, seed=i),
                                  id=case_id(x=dims, axis=axis, eps=epsilon, bias=i % 2 == 0)))
    return cases


@pytest.mark.parametrize("c", layer_norm_cases())
def test_layer_normalization(c):
    """LayerNormalization over the axes from `axis` on, with a scale and optionally a bias, matches
    F.layer_norm (only output 0 is differentiated)."""
    x = normal(c["dims"], c["seed"]) * np.float32(3) + np.float32(1)
    normalized = c["dims"][c["axis"] % len(c["dims"]):]
    scale, bias = normal(normalized, c["seed"] + 1), normal(normalized, c["seed"] + 2)
    consts = {"scale": scale, "bias": bias} if c["bias"] else {"scale": scale}
    ln = node("LayerNormalization", ["x", *consts], axis=c["axis"], epsilon=c["epsilon"])

    def reference(t):
        return F.layer_norm(t, normalized, T(scale), T(bias) if c["bias"] else None, c["epsilon"])
    check([ln], x, consts, torch_reference(reference, x, c["seed"]))


def test_layer_normalization_with_its_statistics_outputs():
    """A LayerNormalization that also writes its Mean and InvStdDev outputs (unused): the gradient is
    output 0's."""
    x = normal((2, 3, 6), 4)
    scale = normal((6,), 5)
    ln = node("LayerNormalization", ["x", "scale"], ["y", "mean", "inv_std"], axis=-1, epsilon=1e-5)
    check([ln], x, {"scale": scale}, torch_reference(lambda t: F.layer_norm(t, [6], T(scale), None, 1e-5), x))


@pytest.mark.parametrize("dims, epsilon", [((2, 3, 5), 1e-5), ((2, 4, 3, 5), 1e-3), ((2, 2, 3, 2, 2), 0.5)])
def test_instance_normalization(dims, epsilon):
    """InstanceNormalization per sample and channel, scaled and shifted per channel: F.instance_norm."""
    x = normal(dims, len(dims)) * np.float32(2)
    scale, bias = normal(dims[1:2], 1), normal(dims[1:2], 2)
    inorm = node("InstanceNormalization", ["x", "scale", "bias"], epsilon=epsilon)
    check([inorm], x, {"scale": scale, "bias": bias},
          torch_reference(lambda t: F.instance_norm(t, weight=T(scale), bias=T(bias), eps=epsilon), x))


def record_gradient(op_node, x, consts, R, opset):
    """The forward output and the gradient at x that the op's record emits for cotangent R, run by
    ONNX Runtime without nnxplain's load and export (for an op that onnx's strict shape inference
    gives no output type, so that a model holding it is refused before its record is asked)."""
    graph = gs.import_onnx(one_op_model([op_node], x.shape, consts, opset=opset))
    the_node = graph.nodes[0]
    dy = gs.Variable("dy", np.float32, R.shape)
    graph.inputs.append(dy)
    dx = RECORDS[the_node.op].vjp(Emitter(graph), the_node, dy)[0]
    for t in (the_node.outputs[0], dx):
        t.dtype = np.float32
    graph.outputs = [the_node.outputs[0], dx]
    return session(gs.export_onnx(graph)).run(None, {"x": x, "dy": R})


@pytest.mark.parametrize("dims, groups", [((2, 6, 5), 3), ((2, 4, 3, 3), 2), ((2, 4, 3, 3), 4), ((2, 6, 2, 3), 1)])
def test_group_normalization(dims, groups):
    """GroupNormalization (opset 21: scale and bias per channel): its record's gradient matches
    F.group_norm's. Through the record directly: onnx 1.23's shape inference gives the op's output
    no type, and nnxplain refuses such a model (test below)."""
    x = normal(dims, groups) * np.float32(2)
    scale, bias = normal(dims[1:2], 1), normal(dims[1:2], 2)
    gnorm = node("GroupNormalization", ["x", "scale", "bias"], num_groups=groups, epsilon=1e-4)
    reference = torch_reference(lambda t: F.group_norm(t, groups, T(scale), T(bias), 1e-4), x)
    y, grad = record_gradient(gnorm, x, {"scale": scale, "bias": bias}, reference.R, opset=21)
    assert relative_error(y, reference.y) <= TOL
    assert relative_error(grad, reference.grad) <= TOL


def test_group_normalization_model_is_refused_in_one_line():
    """A model with GroupNormalization (opset 21) is refused in one line, not a traceback: onnx's
    shape inference gives the op's output no type (a follow-up: let load keep such a model)."""
    x = normal((2, 4, 3), 1)
    gnorm = node("GroupNormalization", ["x", "scale", "bias"], num_groups=2)
    consts = {"scale": normal((4,), 1), "bias": normal((4,), 2)}
    with pytest.raises(nnxplain.NnxplainError, match="shape inference failed") as info:
        explain([gnorm], x, consts, normal((2, 4, 3), 3), opset=21)
    assert "\n" not in str(info.value)


def test_group_normalization_of_opset_18_is_refused():
    """Opset 18's GroupNormalization (scale and bias per group) is deprecated: the onnx checker, and
    so nnxplain, refuses the model in one line naming the op."""
    x = normal((2, 4, 3), 1)
    gnorm = node("GroupNormalization", ["x", "scale", "bias"], num_groups=2)
    consts = {"scale": normal((2,), 1), "bias": normal((2,), 2)}
    with pytest.raises(nnxplain.NnxplainError, match="GroupNormalization is deprecated") as info:
        explain([gnorm], x, consts, normal((2, 4, 3), 3), opset=18)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------- Softmax, LogSoftmax


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
@pytest.mark.parametrize("op, fn", [("Softmax", torch.softmax), ("LogSoftmax", torch.log_softmax)])
def test_softmax_inside_the_graph(op, fn, axis):
    """Softmax and LogSoftmax along any axis (opset 13 semantics), their output not the model's (so
    not stripped): the gradient along the axis."""
    x = normal((2, 3, 4, 5), axis + 4) * np.float32(2)
    check([node(op, ["x"], axis=axis)], x, {}, torch_reference(lambda t: fn(t, axis), x))


def test_attention():
    """softmax(q k^T / 2) v of one input: Softmax between two MatMuls of computed tensors."""
    x = normal((2, 5, 4), 3)
    wq, wk, wv = normal((4, 4), 4), normal((4, 4), 5), normal((4, 4), 6)
    nodes = [node("MatMul", ["x", name], [name[1]], name=name[1]) for name in ("wq", "wk", "wv")]
    nodes += [node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]), node("MatMul", ["q", "kt"], ["s"], name="scores"),
              node("Mul", ["s", "half"], ["scaled"]), node("Softmax", ["scaled"], ["p"], axis=-1),
              node("MatMul", ["p", "v"], name="mix")]
    consts = {"wq": wq, "wk": wk, "wv": wv, "half": np.array(0.5, np.float32)}

    def reference(t):
        q, k, v = t @ T(wq), t @ T(wk), t @ T(wv)
        return torch.softmax(q @ k.transpose(1, 2) * 0.5, -1) @ v
    check(nodes, x, consts, torch_reference(reference, x))


# ------------------------------------------------------------------------------------------ Gather


GATHER_CASES = {  # name: (x dims, axis, indices)
    "class token x[:, 0]": ((2, 5, 3), 1, np.array(0, np.int64)),
    "last token x[:, -1]": ((2, 5, 3), 1, np.array(-1, np.int64)),
    "rows with repeats": ((2, 4, 3), 1, np.array([3, 0, 3, -1], np.int64)),
    "2-D indices, last axis": ((2, 3, 5), -1, np.array([[0, 4], [-2, 1], [2, 2]], np.int64)),
    "batch axis": ((2, 3, 4), 0, np.array([1, 0, 1], np.int64)),
    "int32 indices, axis 2 of 4": ((2, 3, 4, 2), 2, np.array([[3, -4, 1]], np.int32)),
    # constant runs: the gradient is dy padded with zeros
    "k of a stacked q, k, v: qkv[1]": ((3, 2, 4), 0, np.array(1, np.int64)),
    "consecutive rows [1, 2, 3]": ((2, 5, 3), 1, np.array([1, 2, 3], np.int64)),
    "negative run [-2, -1], last axis": ((2, 3, 5), 2, np.array([-2, -1], np.int32)),
}


@pytest.mark.parametrize("case", list(GATHER_CASES))
def test_gather(case):
    """Gather with constant indices (scalar, negative, repeated, 2-D) along any axis: the gradient is
    added back at the gathered positions."""
    dims, axis, indices = GATHER_CASES[case]
    a = axis % len(dims)
    x = normal(dims, len(case))
    where = torch.from_numpy(np.where(indices < 0, indices + dims[a], indices).astype(np.int64))
    out_dims = dims[:a] + indices.shape + dims[a + 1:]
    check([node("Gather", ["x", "indices"], axis=axis)], x, {"indices": indices},
          torch_reference(lambda t: torch.index_select(t, a, where.reshape(-1)).reshape(out_dims), x),
          dynamic=() if a == 0 else (0,))


@pytest.mark.parametrize("offset", [0, -5])
def test_gather_computed_index(offset):
    """Gather at an index computed from the input (the argmax of a column sum, minus `offset` for a
    negative index): the gradient flows to the gathered rows only (an integer index has none)."""
    x = normal((2, 5, 3), 7)
    nodes = [node("ReduceSum", ["x", "axes"], ["s"], keepdims=0), node("ArgMax", ["s"], ["i"], keepdims=1),
             node("Add", ["i", "offset"], ["j"]), node("Gather", ["x", "j"], axis=1)]
    consts = {"axes": np.array([0, 2], np.int64), "offset": np.array(offset, np.int64)}

    def reference(t):
        i = int(t.sum((0, 2)).argmax())
        return t[:, i:i + 1, :]
    check(nodes, x, consts, torch_reference(reference, x))


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_gather_elements(axis):
    """GatherElements along any axis, indices negative and repeated: torch.gather."""
    dims = (2, 3, 4)
    x = normal(dims, axis + 3)
    out_dims = list(dims)
    out_dims[axis] = 5
    size = dims[axis]
    indices = np.random.default_rng(axis + 10).integers(-size, size, out_dims).astype(np.int64)
    where = torch.from_numpy(np.where(indices < 0, indices + size, indices))
    check([node("GatherElements", ["x", "indices"], axis=axis)], x, {"indices": indices},
          torch_reference(lambda t: torch.gather(t, axis % 3, where), x), dynamic=() if axis % 3 == 0 else (0,))


# ------------------------------------------------------------------------------------------ Resize


def linear_reference(nodes, x, consts, opset, seed=0) -> Reference:
    """The output and gradient of an op linear in x, through onnx.reference in float64 (the float32
    constants, Resize's scales, stay float32): the gradient of sum(op(x) * R) is op's transpose
    applied to R, read off op(e_i) . R for each unit vector e_i (exact: no step size)."""
    model = one_op_model(nodes, x.shape, consts, elem=TensorProto.DOUBLE, opset=opset)
    f = lambda v: ReferenceEvaluator(model).run(None, {"x": v})[0]  # noqa: E731
    y = f(x.astype(np.float64))
    R = np.random.default_rng(seed + 1000).standard_normal(y.shape).astype(np.float32)
    units = np.eye(x.size).reshape(x.size, *x.shape)
    grad = np.array([(f(u) * R).sum() for u in units]).reshape(x.shape)
    return Reference(y, grad, R)


RESIZE_CASES = [  # mode, coordinate_transformation_mode, nearest_mode, scales or sizes of H, W
    ("nearest", "asymmetric", "floor", ("scales", 2.0, 2.0)),             # torch nn.Upsample(nearest)
    ("nearest", "asymmetric", "floor", ("scales", 0.5, 1.5)),
    ("nearest", "half_pixel", "round_prefer_floor", ("scales", 1.5, 3.0)),
    ("nearest", "half_pixel", "round_prefer_ceil", ("sizes", 7, 4)),
    ("nearest", "align_corners", "ceil", ("sizes", 5, 9)),
    ("nearest", "pytorch_half_pixel", "round_prefer_floor", ("scales", 2.5, 0.75)),
    ("linear", "half_pixel", "floor", ("scales", 2.0, 2.0)),                # bilinear, align_corners=False
    ("linear", "half_pixel", "floor", ("scales", 0.5, 1.7)),
    ("linear", "align_corners", "floor", ("sizes", 7, 5)),
    ("linear", "pytorch_half_pixel", "floor", ("sizes", 1, 6)),
    ("linear", "asymmetric", "floor", ("scales", 3.0, 1.0)),
    ("linear", "half_pixel_symmetric", "floor", ("scales", 1.5, 2.5)),
]


@pytest.mark.parametrize("c", RESIZE_CASES, ids=lambda c: case_id(m=c[0], t=c[1], n=c[2], by=c[3]))
def test_resize(c):
    """Resize of [N, C, H, W] in nearest and linear modes, by scales or sizes: the gradient equals the
    transpose of onnx.reference's Resize in float64 (whose forward output equals ONNX Runtime's)."""
    mode, transform, nearest, (by, h, w) = c
    x = normal((2, 3, 4, 5), len(transform)) * np.float32(2)
    given = np.array([1, 1, h, w], np.float32) if by == "scales" else np.array([2, 3, h, w], np.int64)
    inputs = ["x", "", "given", ""] if by == "scales" else ["x", "", "", "given"]
    resize = node("Resize", inputs, mode=mode, coordinate_transformation_mode=transform, nearest_mode=nearest)
    opset = 19 if transform == "half_pixel_symmetric" else OPSET
    dynamic = (0,) if by == "scales" else ()
    reference = linear_reference([resize], x, {"given": given}, opset)
    check([resize], x, {"given": given}, reference, dynamic=dynamic, opset=opset)


@pytest.mark.parametrize("scale, mode, align", [(2, "bilinear", False), (2, "bilinear", True), (3, "nearest", None)])
def test_resize_as_torch_exports_it(scale, mode, align):
    """F.interpolate as torch exports it (the U-Net's upsampling): torch autograd."""
    x = normal((2, 3, 4, 5), scale)
    transform = "align_corners" if align else "half_pixel" if mode == "bilinear" else "asymmetric"
    onnx_mode = "linear" if mode == "bilinear" else "nearest"
    scales = np.array([1, 1, scale, scale], np.float32)
    resize = node("Resize", ["x", "", "scales"], mode=onnx_mode, coordinate_transformation_mode=transform,
                  nearest_mode="floor")
    check([resize], x, {"scales": scales},
          torch_reference(lambda t: F.interpolate(t, scale_factor=scale, mode=mode, align_corners=align), x))


@pytest.mark.parametrize("mode, transform, torch_mode", [("linear", "half_pixel", "bilinear"),
                                                         ("nearest", "asymmetric", "nearest")])
def test_resize_to_sizes_computed_from_the_dynamic_batch(mode, transform, torch_mode):
    """F.interpolate(size=...) on a dynamic batch, as torch exports it: the sizes are computed at run
    time (x's batch and channel dims, then constants); the output's static dims stand for them."""
    x = normal((2, 3, 4, 5), 6)
    nodes = [node("Shape", ["x"], ["s"]), node("Slice", ["s", "zero", "two"], ["nc"]),
             node("Concat", ["nc", "hw"], ["sizes"], axis=0),
             node("Resize", ["x", "", "", "sizes"], mode=mode, coordinate_transformation_mode=transform,
                  nearest_mode="floor")]
    consts = {"zero": np.array([0], np.int64), "two": np.array([2], np.int64), "hw": np.array([7, 3], np.int64)}
    align = False if torch_mode == "bilinear" else None
    check(nodes, x, consts, torch_reference(lambda t: F.interpolate(t, size=(7, 3), mode=torch_mode, align_corners=align), x))


@pytest.mark.parametrize("attrs, match", [(dict(mode="cubic"), "mode 'cubic'"),
                                          (dict(mode="linear", antialias=1), "antialias"),
                                          (dict(coordinate_transformation_mode="tf_crop_and_resize"), "tf_crop_and_resize")])
def test_resize_refused(attrs, match):
    """What Resize's gradient does not cover is refused in one line naming the node and what."""
    x = normal((2, 3, 4, 5), 1)
    scales = np.array([1, 1, 2, 2], np.float32)
    with pytest.raises(nnxplain.UnsupportedError, match=match) as info:
        explain([node("Resize", ["x", "", "scales"], name="up", **attrs)], x, {"scales": scales},
                normal((2, 3, 8, 10), 2), opset=18)
    assert "node 'up' (Resize)" in str(info.value)


# ----------------------------------------------------------------------------------- ConvTranspose

CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def conv_transpose_cases(count=16, seed=5):
    rnd = random.Random(seed)
    cases = []
    for i in range(count):
        rank = [1, 2, 2, 3][i % 4]
        k = [rnd.randint(1, 4 if rank < 3 else 3) for _ in range(rank)]
        s = [rnd.randint(1, 3) for _ in range(rank)]
        d = [rnd.randint(1, 2) for _ in range(rank)]
        out_pad = [rnd.randint(0, s[a] - 1) for a in range(rank)]  # ONNX Runtime: below the stride
        size = [rnd.randint(1, 4) for _ in range(rank)]
        pads = [0] * 2 * rank
        for a in range(2 * rank):  # begin and end apart, leaving at least one output
            room = (size[a % rank] - 1) * s[a % rank] + (k[a % rank] - 1) * d[a % rank] + out_pad[a % rank] - pads[a - rank]
            pads[a] = rnd.randint(0, max(0, min(room, 3)))
        group = ["1", "2", "depthwise"][i % 3]
        c_in, c_out_g, groups = {"1": (rnd.randint(1, 3), rnd.randint(1, 3), 1), "2": (4, 3, 2),
                                 "depthwise": (3, 1, 3)}[group]
        cases.append(pytest.param(dict(k=k, s=s, d=d, pads=pads, out_pad=out_pad, c_in=c_in, c_out_g=c_out_g,
                                       groups=groups, size=size, bias=i % 3 != 1, seed=i),
                                  id=case_id(r=rank, k=k, s=s, d=d, p=pads, op=out_pad, g=group)))
    return cases


@pytest.mark.parametrize("c", conv_transpose_cases())
def test_conv_transpose(c):
    """ConvTranspose of any rank with strides, dilations, pads (begin and end apart), output_padding
    and groups: torch's conv_transpose, the end pads applied by cropping its output."""
    rank = len(c["k"])
    x = normal([2, c["c_in"]] + c["size"], c["seed"])
    W = normal([c["c_in"], c["c_out_g"]] + c["k"], c["seed"] + 1)
    b = normal([c["c_out_g"] * c["groups"]], c["seed"] + 2)
    consts = {"W": W, "b": b} if c["bias"] else {"W": W}
    attrs = dict(kernel_shape=c["k"], strides=c["s"], dilations=c["d"], group=c["groups"], pads=c["pads"],
                 output_padding=c["out_pad"])
    begin, end = c["pads"][:rank], c["pads"][rank:]

    def reference(t):
        full = CONV_TRANSPOSE[rank](t, T(W), T(b) if c["bias"] else None, stride=c["s"], dilation=c["d"],
                                    groups=c["groups"], output_padding=c["out_pad"])
        return full[(..., *[slice(p, n - q) for p, q, n in zip(begin, end, full.shape[2:])])]
    check([node("ConvTranspose", ["x", *consts], **attrs)], x, consts, torch_reference(reference, x, c["seed"]))


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("k, s, d, size", [([3, 2], [2, 2], [1, 1], [3, 4]), ([4, 3], [2, 3], [1, 2], [3, 2]),
                                           ([2, 2], [1, 1], [1, 1], [3, 3])])
def test_conv_transpose_same_padding(mode, k, s, d, size):
    """auto_pad SAME_*: the output is the input times the stride, the total padding split as the
    specification says (the odd one at the end for SAME_UPPER, at the beginning for SAME_LOWER)."""
    x, W = normal([2, 2] + size, 1), normal([2, 3] + k, 2)
    begin, end = [], []
    for n, k_, s_, d_ in zip(size, k, s, d):
        total = s_ * (n - 1) + (k_ - 1) * d_ + 1 - n * s_
        small, large = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else large)
        end.append(large if mode == "SAME_UPPER" else small)

    def reference(t):
        full = F.conv_transpose2d(t, T(W), stride=s, dilation=d)
        return full[(..., *[slice(b, n - e) for b, e, n in zip(begin, end, full.shape[2:])])]
    conv_t = node("ConvTranspose", ["x", "W"], auto_pad=mode, strides=s, dilations=d, kernel_shape=k)
    check([conv_t], x, {"W": W}, torch_reference(reference, x))


def test_conv_transpose_output_shape_is_refused():
    """output_shape (pads chosen by the engine from it) is refused by name."""
    x = normal((2, 2, 3, 3), 1)
    conv_t = node("ConvTranspose", ["x", "W"], name="up", output_shape=[7, 7], strides=[2, 2])
    with pytest.raises(nnxplain.UnsupportedError, match=r"node 'up' \(ConvTranspose\): output_shape is not supported"):
        explain([conv_t], x, {"W": normal((2, 3, 3, 3), 2)}, normal((2, 3, 7, 7), 3))


def upsampling(layer: str, W, b, stride=1):
    """x [N, 2, 4, 4] -> `layer` (ConvTranspose with weight W [2, 3, 3, 3], pads begin and end apart,
    or the Conv that computes the same at stride 1) -> times a random R: the explained output."""
    if layer == "ConvTranspose":
        up = node("ConvTranspose", ["x", "W", "b"], name="up", strides=[stride] * 2, pads=[1, 0, 0, 1])
    else:  # ConvTranspose at stride 1 is the Conv with the weight's channels swapped, its taps flipped
        W = np.ascontiguousarray(np.flip(W.transpose(1, 0, 2, 3), (2, 3)))
        up = node("Conv", ["x", "W", "b"], name="up", pads=[2 - 1, 2 - 0, 2 - 0, 2 - 1])
    side = (4 - 1) * stride + 3 - 1
    return one_op_model([up], (2, 2, 4, 4), {"W": W, "b": b}, R=normal((2, 3, side, side), 8))


@pytest.mark.parametrize("method", lrp_methods())
def test_lrp_through_conv_transpose_equals_through_the_same_conv(method):
    """Every LRP and Deep Taylor method gives a stride-1 ConvTranspose the relevance it gives the Conv
    that computes the same (the rules modify weights elementwise and use the op's own transpose)."""
    x = normal((2, 2, 4, 4), 5)
    W, b = normal((2, 3, 3, 3), 6), normal((3,), 7) * np.float32(0.1)
    compiled = (nnxplain.compile(upsampling(layer, W, b), [method], neuron_selection="all",
                                 params=required_params(method)) for layer in ("ConvTranspose", "Conv"))
    through, expected = (session(model).run([method], {"x": x})[0] for model in compiled)
    assert np.abs(expected).max() > 0
    assert relative_error(through, expected) <= TOL


def test_lrp_z_through_a_strided_conv_transpose_is_input_times_gradient():
    """LRP-z on a bias-free linear layer is input x gradient: on a strided ConvTranspose (begin and end
    pads apart) too."""
    x = normal((2, 2, 4, 4), 5)
    model = upsampling("ConvTranspose", normal((2, 3, 3, 3), 6), np.zeros(3, np.float32), stride=2)
    relevance, input_times_gradient = session(nnxplain.compile(model, ["lrp.z", "input_t_gradient"])).run(
        ["lrp.z", "input_t_gradient"], {"x": x})
    assert relative_error(relevance, input_times_gradient) <= TOL


def test_patternnet_refuses_conv_transpose():
    """PatternNet has no rows of ConvTranspose's weight: the node is refused by name."""
    nodes = [node("ConvTranspose", ["x", "W"], ["u"], name="up", strides=[2, 2]), node("Conv", ["u", "V"], ["y"])]
    model = dense_after(nodes, (2, 2, 3, 3), {"W": normal((2, 3, 2, 2), 2), "V": normal((2, 3, 1, 1), 3)}, 2 * 6 * 6)
    patterns = fit(model, normal((8, 2, 3, 3), 4), progress=False)
    with pytest.raises(nnxplain.NnxplainError, match="node 'up' \\(ConvTranspose\\) has no pattern: PatternNet has no rows"):
        nnxplain.compile(model, ["pattern.net"], patterns=patterns)


# -------------------------------------------------------------------- products of computed tensors


def test_matmul_of_two_computed_tensors_broadcasting_batch_dims():
    """Attention-like x[:, None] @ (x[:, None] * c)^T, [N, 1, 3, 4] @ [N, 2, 4, 3]: both operands
    computed, the first broadcast over the second's head axis (its gradient summed back over it)."""
    x = normal((2, 3, 4), 1)
    c = normal((1, 2, 1, 1), 2)
    nodes = [node("Unsqueeze", ["x", "one"], ["a"]), node("Mul", ["a", "c"], ["b"]),
             node("Transpose", ["b"], ["bt"], perm=[0, 1, 3, 2]), node("MatMul", ["a", "bt"])]
    consts = {"one": np.array([1], np.int64), "c": c}
    check(nodes, x, consts, torch_reference(lambda t: t[:, None] @ (t[:, None] * T(c)).transpose(2, 3), x))


def test_matmul_of_a_computed_matrix_without_batch_dims():
    """x @ sum_batch(x)^T, [N, 3, 4] @ [4, 3]: the second operand, computed without a batch axis, is
    broadcast over the batch (its gradient summed over it)."""
    x = normal((2, 3, 4), 3)
    nodes = [node("ReduceSum", ["x", "zero"], ["s"], keepdims=0), node("Transpose", ["s"], ["st"], perm=[1, 0]),
             node("MatMul", ["x", "st"])]
    check(nodes, x, {"zero": np.array([0], np.int64)}, torch_reference(lambda t: t @ t.sum(0).T, x))


@pytest.mark.parametrize("gate", ["Sigmoid", "Tanh"])
def test_mul_by_a_computed_gate(gate):
    """Squeeze-and-excitation: x [N, C, H, W] times gate(mean over H, W) [N, C, 1, 1], a Mul of two
    computed tensors, the gate broadcast over the positions."""
    x = normal((2, 3, 4, 5), 4)
    nodes = [node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=1), node(gate, ["m"], ["g"]),
             node("Mul", ["x", "g"])]
    fn = torch.sigmoid if gate == "Sigmoid" else torch.tanh
    check(nodes, x, {}, torch_reference(lambda t: t * fn(t.mean((2, 3), keepdim=True)), x))


# ------------------------------------------------------------------------------------------ Einsum

EINSUM_CASES = {  # equation: (x dims, the second operand: "x" computed from x, or a constant's dims)
    "bhid,bhjd->bhij": ((2, 2, 3, 4), "x"),       # attention scores
    "bhij,bhjd->bhid": ((2, 2, 3, 3), "x"),       # attention times values
    "bij,bjk->bik": ((2, 3, 4), (2, 4, 5)),
    "bij,bkj->bik": ((2, 3, 4), "x"),
    "bi,ij->bj": ((2, 4), (4, 3)),
    "bij,jk->bk": ((2, 3, 4), (4, 5)),            # i summed in the first operand only
    "bij,bk->bjk": ((2, 3, 4), (2, 5)),           # i in the first operand only
    "bi,bj->bij": ((2, 4), "x"),                  # outer product
    "bij->bji": ((2, 3, 4), None),
    "bij->b": ((2, 3, 4), None),
    "bij,bjk": ((2, 3, 4), (2, 4, 5)),            # implicit output: "ik", summed over b
}


@pytest.mark.parametrize("equation", list(EINSUM_CASES))
def test_einsum(equation):
    """Einsum of one or two operands, the second computed from x too (a square of x, its indices
    renamed) or a constant: torch.einsum."""
    dims, second = EINSUM_CASES[equation]
    x = normal(dims, len(equation))
    consts, inputs = {}, ["x"]
    nodes = []
    if second == "x":
        nodes.append(node("Mul", ["x", "x"], ["x2"]))  # the same dims as x, another function of it
        inputs.append("x2")
    elif second is not None:
        consts["c"] = normal(second, 1)
        inputs.append("c")
    nodes.append(node("Einsum", inputs, equation=equation))

    def reference(t):
        operands = [t] + ([t * t] if second == "x" else [T(consts["c"])] if consts else [])
        return torch.einsum(equation, *operands)
    check(nodes, x, consts, torch_reference(reference, x), dynamic=(0,) if "b" in equation else ())


@pytest.mark.parametrize("equation, dims", [("bii->bi", (2, 3, 3)), ("...ij,...jk->...ik", (2, 3, 3)),
                                             ("bi,bi,bi->b", (2, 3))])
def test_einsum_refused(equation, dims):
    """An Einsum with a repeated index in one operand, an ellipsis or three operands is refused in one
    line naming the equation."""
    x = normal(dims, 1)
    operands = ["x"] * (equation.split("->")[0].count(",") + 1)
    out = {"bii->bi": (2, 3), "...ij,...jk->...ik": (2, 3, 3), "bi,bi,bi->b": (2,)}[equation]
    with pytest.raises(nnxplain.UnsupportedError, match="Einsum equation") as info:
        explain([node("Einsum", operands, name="attention", equation=equation)], x, {}, normal(out, 2))
    assert "node 'attention' (Einsum)" in str(info.value) and equation in str(info.value)


# ------------------------------------------------------------------------------------- under LRP


def dense_after(nodes, x_dims, consts, features, dynamic=(0,)):
    """`nodes` (x -> y) then Flatten, Gemm to 3 outputs: a model an LRP method explains."""
    tail = [node("Flatten", ["y"], ["f"], name="flat"), node("Gemm", ["f", "W_dense"], ["out"], name="dense")]
    model = one_op_model(nodes + tail, x_dims, {**consts, "W_dense": normal((features, 3), 9)}, R=None, dynamic=dynamic)
    model.graph.output[0].name = "out"
    return model


NONLINEAR = {  # op: (its node, x dims, constants); LayerNormalization has an LRP rule (tests/test_attention_lrp.py)
    "InstanceNormalization": (node("InstanceNormalization", ["x", "s", "b"], name="the_op"), (2, 3, 4),
                              {"s": normal((3,), 1), "b": normal((3,), 2)}),
    "Softmax": (node("Softmax", ["x"], name="the_op", axis=1), (2, 3, 4), {}),
    "Einsum": (node("Einsum", ["x", "c"], name="the_op", equation="bij,jk->bik"), (2, 3, 4), {"c": normal((4, 4), 2)}),
}


@pytest.mark.parametrize("op", list(NONLINEAR))
def test_lrp_refuses_the_nonlinear_ops(op):
    """Normalizations other than LayerNormalization, Softmax and Einsum are category "nonlinear": LRP
    methods refuse the node by name (until a rule names the op), gradient methods explain it."""
    the_node, dims, consts = NONLINEAR[op]
    model = dense_after([the_node], dims, consts, int(np.prod(dims[1:])))
    with pytest.raises(nnxplain.NnxplainError, match="the_op") as info:
        nnxplain.compile(model, ["lrp.epsilon"])
    assert op in str(info.value)
    nnxplain.compile(model, ["gradient"])


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_lrp_z_through_resize_conserves_relevance(mode):
    """Resize is proportional (a sum of its input's contributions with fixed weights): the z-rule
    passes relevance through it conserved, as through average pooling."""
    x = np.abs(normal((2, 2, 3, 3), 4)) + np.float32(0.1)
    resize = node("Resize", ["x", "", "scales"], ["y"], name="up", mode=mode)
    consts = {"scales": np.array([1, 1, 2, 2], np.float32)}
    # a static batch: onnx infers no symbolic batch through Resize's scales (see the README)
    model = dense_after([resize], x.shape, consts, 2 * 6 * 6, dynamic=())
    compiled = nnxplain.compile(model, ["lrp.z"], neuron_selection="all")
    out, relevance = session(compiled).run(None, {"x": x})
    assert relative_error(relevance.sum(axis=(1, 2, 3)), out.sum(axis=1)) <= TOL
