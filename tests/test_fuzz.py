"""Fuzz: random valid graphs from the supported ops (a seeded generator: every run builds the same
graphs), compiled with `gradient` (neuron_selection="all"), checked against central finite
differences in float64 (onnx.reference on a float64 copy of the graph) along random directions.

NNXPLAIN_FUZZ_GRAPHS=N tries N graphs instead of the default.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper
from onnx import helper as oh
from onnx.reference import ReferenceEvaluator

import nnxplain
from nnxplain.runtime import session

GRAPHS = int(os.environ.get("NNXPLAIN_FUZZ_GRAPHS", "300"))
BATCH = 2
# one-input activations defined everywhere, with their default attributes: one draw among the ops
# below picks "Unary", then one of these (not Erf: onnx.reference computes it in float32 whatever the
# input type, too coarse for the finite differences; tests/test_ops_pointwise.py checks it against torch)
UNARY = ["Softsign", "Selu", "Celu", "Elu", "HardSigmoid", "HardSwish", "Abs", "Neg", "Softplus"]


class Builder:
    """Grows a graph from input `x`: each step applies a random op to the newest tensor (and maybe
    an older one), so the output always depends on the input."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.nodes, self.inits, self.ops = rng, [], [], []
        rank = rng.choice([2, 4])
        self.in_shape = [BATCH, int(rng.integers(2, 7))] if rank == 2 else \
            [BATCH, int(rng.integers(1, 4)), int(rng.integers(3, 7)), int(rng.integers(3, 7))]
        self.pool = [("x", list(self.in_shape))]
        self.n = 0

    def name(self, what):
        self.n += 1
        return f"{what}_{self.n}"

    def const(self, array):
        name = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def emit(self, op, inputs, shape, **attrs):
        out = self.name(op.lower())
        self.nodes.append(oh.make_node(op, inputs, [out], name=self.name("node"), **attrs))
        self.ops.append(op)
        self.pool.append((out, shape))
        return out

    def weights(self, *shape, scale=None):
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        return self.rng.normal(size=shape) * (scale or 1.0 / np.sqrt(max(fan_in, 1)))

    def step(self):
        rng = self.rng
        t, shape = self.pool[-1]
        same = [(n, s) for n, s in self.pool[:-1] if s == shape]
        choices = ["Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "AddConst", "MulConst", "DivConst", "SubConst",
                   "Unary"]
        if same:
            choices += ["Add", "Sub", "Mul", "Concat", "Max", "Min"]
        if len(shape) == 4:
            c, h, w = shape[1:]
            choices += ["Conv", "Conv", "DepthwiseConv", "Transpose", "Pad", "ReduceMean", "ReduceSum", "Split",
                        "Slice", "Flatten"]
            if h >= 2 and w >= 2:
                choices += ["MaxPool", "AveragePool"]
            choices += ["GlobalAveragePool", "GlobalMaxPool"]
        else:
            choices += ["Gemm", "Gemm", "MatMul", "Reshape", "Slice", "Split"]
        op = str(rng.choice(choices))
        if op == "Unary":
            op = str(rng.choice(UNARY))
        if op in ("Relu", "Sigmoid", "Tanh", *UNARY):
            return self.emit(op, [t], shape)
        if op == "LeakyRelu":
            return self.emit(op, [t], shape, alpha=float(rng.uniform(0.01, 0.5)))
        if op == "Clip":
            return self.emit(op, [t, self.const(-1.0 - rng.random()), self.const(1.0 + rng.random())], shape)
        if op.endswith("Const"):
            base = op[:-5]
            b_shape = [1] * len(shape) if rng.random() < 0.5 else [1] + shape[1:2] + [1] * (len(shape) - 2)
            value = rng.uniform(0.5, 2.0, size=b_shape) * rng.choice([-1, 1], size=b_shape)
            return self.emit(base, [t, self.const(value)], shape)
        if op in ("Add", "Sub", "Mul", "Max", "Min"):
            other = same[int(rng.integers(len(same)))][0]
            return self.emit(op, [t, other] if rng.random() < 0.5 else [other, t], shape)
        if op == "Concat":
            other = same[int(rng.integers(len(same)))][0]
            return self.emit(op, [t, other], [shape[0], shape[1] * 2] + shape[2:], axis=1)
        if op in ("Conv", "DepthwiseConv"):
            c, h, w = shape[1:]
            k = int(rng.choice([1, 3])) if min(h, w) >= 3 else 1
            stride = int(rng.choice([1, 2])) if min(h, w) >= 4 else 1
            pad = int(rng.integers(0, k // 2 + 1))
            groups = c if op == "DepthwiseConv" else 1
            out_c = c if groups > 1 else int(rng.integers(1, 5))
            wt = self.const(self.weights(out_c, c // groups, k, k))
            ins = [t, wt] + ([self.const(rng.normal(size=out_c) * 0.1)] if rng.random() < 0.7 else [])
            oh_, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
            return self.emit("Conv", ins, [BATCH, out_c, oh_, ow], kernel_shape=[k, k], strides=[stride, stride],
                             pads=[pad] * 4, group=groups)
        if op == "Gemm":
            f = shape[1]
            out = int(rng.integers(2, 7))
            trans = int(rng.integers(2))
            wt = self.weights(out, f)
            w_name = self.const(wt if trans else wt.T)
            return self.emit("Gemm", [t, w_name, self.const(rng.normal(size=out) * 0.1)], [BATCH, out], transB=trans)
        if op == "MatMul":
            out = int(rng.integers(2, 7))
            return self.emit("MatMul", [t, self.const(self.weights(out, shape[1]).T)], [BATCH, out])
        if op == "Reshape":
            r = self.emit("Reshape", [t, numpy_const(self, [0, -1, 1])], [BATCH, shape[1], 1])
            return self.emit("Flatten", [r], [BATCH, shape[1]], axis=1)
        if op == "Flatten":
            return self.emit("Flatten", [t], [BATCH, int(np.prod(shape[1:]))], axis=1)
        if op == "Transpose":
            return self.emit("Transpose", [t], [BATCH, shape[1], shape[3], shape[2]], perm=[0, 1, 3, 2])
        if op == "Pad":
            p = [int(v) for v in rng.integers(0, 2, size=4)]
            pads = [0, 0, p[0], p[1], 0, 0, p[2], p[3]]
            return self.emit("Pad", [t, numpy_const(self, pads), self.const(float(rng.normal()))],
                             [BATCH, shape[1], shape[2] + p[0] + p[2], shape[3] + p[1] + p[3]], mode="constant")
        if op == "ReduceSum":  # axes as an input since opset 13, ReduceMean's since 18
            return self.emit(op, [t, numpy_const(self, [2, 3])], shape[:2] + [1, 1], keepdims=1)
        if op == "ReduceMean":
            return self.emit(op, [t], shape[:2] + [1, 1], axes=[2, 3], keepdims=1)
        if op in ("GlobalAveragePool", "GlobalMaxPool"):
            return self.emit(op, [t], shape[:2] + [1, 1])
        if op in ("MaxPool", "AveragePool"):
            h, w = shape[2:]
            k = 2 if min(h, w) < 3 else int(rng.choice([2, 3]))
            s = int(rng.choice([1, 2]))
            pad = int(rng.integers(0, 2)) if k == 3 else 0
            attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[pad] * 4)
            if op == "AveragePool":
                attrs["count_include_pad"] = int(rng.integers(2))
            return self.emit(op, [t], shape[:2] + [(h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1], **attrs)
        if op == "Split":
            axis = 1
            if shape[axis] < 2:
                return self.emit("Relu", [t], shape)
            first = int(rng.integers(1, shape[axis]))
            outs = [self.name("split"), self.name("split")]
            self.nodes.append(oh.make_node("Split", [t, numpy_const(self, [first, shape[axis] - first])], outs,
                                           name=self.name("node"), axis=axis))
            self.ops.append("Split")
            keep = int(rng.integers(2))
            new = list(shape)
            new[axis] = first if keep == 0 else shape[axis] - first
            self.pool.append((outs[keep], new))
            return outs[keep]
        if op == "Slice":
            axis = int(rng.integers(1, len(shape)))
            n = shape[axis]
            if n < 2:
                return self.emit("Tanh", [t], shape)
            start = int(rng.integers(0, n - 1))
            step = int(rng.choice([1, 2]))
            end = int(rng.integers(start + 1, n + 1))
            new = list(shape)
            new[axis] = len(range(start, end, step))
            return self.emit("Slice", [t, numpy_const(self, [start]), numpy_const(self, [end]),
                                       numpy_const(self, [axis]), numpy_const(self, [step])], new)
        raise AssertionError(op)

    def finish(self):
        t, shape = self.pool[-1]
        if len(shape) > 2:
            t = self.emit("Flatten", [t], [BATCH, int(np.prod(shape[1:]))], axis=1)
            shape = self.pool[-1][1]
        out = int(self.rng.integers(2, 5))
        self.nodes.append(oh.make_node("Gemm", [t, self.const(self.weights(out, shape[1])), self.const(np.zeros(out))],
                                       ["y"], name="head", transB=1))
        self.ops.append("Gemm")
        graph = oh.make_graph(self.nodes, "fuzz",
                              [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N"] + self.in_shape[1:])],
                              [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out])], self.inits)
        return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=10)


def numpy_const(builder, values):
    name = builder.name("i")
    builder.inits.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
    return name


def as_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for i, init in enumerate(m.graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float64),
                                                                    init.name))
    for v in list(m.graph.input) + list(m.graph.output):
        v.type.tensor_type.elem_type = TensorProto.DOUBLE
    return m


def random_graph(seed: int) -> tuple[onnx.ModelProto, list[str]]:
    rng = np.random.default_rng(seed)
    b = Builder(rng)
    for _ in range(int(rng.integers(2, 9))):
        b.step()
    model = b.finish()
    onnx.checker.check_model(model, full_check=True)
    return model, b.ops


def check_graph(seed: int):
    model, ops = random_graph(seed)
    rng = np.random.default_rng(10_000 + seed)
    shape = [BATCH] + [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    x = rng.normal(size=shape).astype(np.float32)
    explainer = nnxplain.compile(model, ["gradient"], neuron_selection="all")
    grad = session(explainer).run(["gradient"], {"x": x})[0].astype(np.float64)
    ref = ReferenceEvaluator(as_float64(model))

    def f(v):
        return float(ref.run(None, {"x": v})[0].sum())

    x64, eps = x.astype(np.float64), 1e-6
    errors = []
    for _ in range(3):  # directional derivatives along random directions
        d = rng.normal(size=shape)
        fd = (f(x64 + eps * d) - f(x64 - eps * d)) / (2 * eps)
        analytic = float((grad * d).sum())
        # the size of a directional derivative of this gradient, floored at 0.01: the explainer runs in
        # float32, so where saturated activations (Clip, Tanh, Sigmoid) or cancellation make the
        # gradient tiny its absolute error stays at float32 rounding of the O(1) terms it is made of
        scale = max(np.abs(grad).sum() * np.abs(d).max() / np.sqrt(grad.size), abs(fd), 1e-2)
        errors.append(abs(analytic - fd) / scale)
    return max(errors), ops


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # onnx.reference's Sigmoid evaluates both branches of np.where
def test_random_graphs_match_finite_differences():
    failures, op_counts = [], {}
    for seed in range(GRAPHS):
        error, ops = check_graph(seed)
        for op in ops:
            op_counts[op] = op_counts.get(op, 0) + 1
        if not np.isfinite(error) or error > 1e-3:  # a wrong gradient is off by O(1); float32 rounding stays below 1e-4 mostly
            failures.append((seed, error, ops))
    print(f"{GRAPHS} random graphs, ops used: {dict(sorted(op_counts.items()))}")
    assert not failures, failures
    assert len(op_counts) >= 20, op_counts  # the generator reaches most of the supported ops
