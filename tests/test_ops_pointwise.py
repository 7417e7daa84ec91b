"""Op-level correctness of the pointwise and elementwise op records (issue 11): activations, Pow,
n-ary Max / Min / Sum / Mean, Cast, Where, Expand, Tile, ReduceMax / ReduceMin, the nonlinear
reductions and CumSum.

The harness is tests/test_ops.py's (a one-op model times a random cotangent R, compiled with
`gradient`, neuron_selection="all"): forward output and gradient against torch autograd in float64
(or float64 finite differences), relative error <= 1e-5. Attribute sweeps are seeded. The last
sections check each record's facts: that they are true of the op (evaluated, not restated), and
what LRP methods do with the op because of them.
"""
from __future__ import annotations

import random

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, numpy_helper
from onnx import helper as oh

import nnxplain
from nnxplain import ops
from nnxplain.methods import load_method
from nnxplain.runtime import session

from conftest import lrp_methods, relative_error, required_params
from test_ops import (TOL, T, away_from_zero, check, dense_model, finite_difference_reference, node, normal,
                      one_op_model, torch_reference, with_kinks)
from test_ops import error_report  # noqa: F401  (NNXPLAIN_OP_ERRORS=path.json: the largest errors, these tests' too)

X_SHAPE = (2, 3, 4, 5)


def f32(v) -> float:
    """An attribute as the model stores it (float32), for the torch reference."""
    return float(np.float32(v))


def sweep(count, seed, **ranges):
    """`count` seeded cases, each drawing every named attribute uniformly from its (low, high)."""
    rnd = random.Random(seed)
    return [pytest.param({k: round(rnd.uniform(*r), 3) for k, r in ranges.items()} | {"seed": i}, id=f"case{i}")
            for i in range(count)]


# ------------------------------------------------------------------------- one-input activations

UNARY = {  # op: (torch equivalent, input: seed -> x)
    "Erf": (torch.erf, lambda s: normal(X_SHAPE, s) * np.float32(1.5)),
    "Exp": (torch.exp, lambda s: normal(X_SHAPE, s) * np.float32(2)),
    "Log": (torch.log, lambda s: np.abs(normal(X_SHAPE, s)) * np.float32(2) + np.float32(0.05)),
    "Sqrt": (torch.sqrt, lambda s: np.abs(normal(X_SHAPE, s)) * np.float32(2) + np.float32(0.05)),
    "Reciprocal": (torch.reciprocal, lambda s: away_from_zero(X_SHAPE, s)),
    "Neg": (torch.neg, lambda s: normal(X_SHAPE, s)),
    "Abs": (torch.abs, lambda s: with_kinks(X_SHAPE, s)),  # sign(0) = 0, as torch
    "Softsign": (F.softsign, lambda s: with_kinks(X_SHAPE, s, scale=3)),
    "HardSwish": (F.hardswish, lambda s: with_kinks(X_SHAPE, s, points=(-3.0, 0.0, 3.0), scale=3)),
    "HardSigmoid (torch's alpha 1/6)": (F.hardsigmoid, lambda s: with_kinks(X_SHAPE, s, points=(-3.0, 3.0), scale=3)),
    "Selu (defaults)": (F.selu, lambda s: with_kinks(X_SHAPE, s, scale=2)),
    "Celu (default alpha)": (F.celu, lambda s: with_kinks(X_SHAPE, s, scale=2)),
    "ThresholdedRelu (default alpha)": (lambda t: F.threshold(t, 1.0, 0.0),
                                        lambda s: with_kinks(X_SHAPE, s, points=(1.0, 0.0), scale=2)),
}
ATTRS = {"HardSigmoid (torch's alpha 1/6)": {"alpha": 1 / 6}}


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("case", list(UNARY))
def test_unary_activation(case, seed):
    """Each one-input activation's gradient matches torch's, at its kinks too (torch's convention there)."""
    fn, make_x = UNARY[case]
    op = case.split(" ")[0]
    x = make_x(seed)
    check([node(op, ["x"], **ATTRS.get(case, {}))], x, {}, torch_reference(fn, x, seed))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("c", sweep(4, 11, scale=(0.3, 6.0)))
def test_gelu(c, approximate):
    """Gelu (opset 20), exact and tanh approximation, over seeded input scales (the tails saturate)."""
    x = normal(X_SHAPE, c["seed"]) * np.float32(c["scale"])
    check([node("Gelu", ["x"], approximate=approximate)], x, {},
          torch_reference(lambda t: F.gelu(t, approximate=approximate), x, c["seed"]), opset=20)


@pytest.mark.parametrize("c", sweep(5, 12, alpha=(0.1, 3.0), gamma=(0.2, 2.5), scale=(0.5, 4.0)))
def test_selu(c):
    """Selu with seeded alpha and gamma: gamma where x > 0, gamma alpha e^x elsewhere (at 0 too)."""
    alpha, gamma = f32(c["alpha"]), f32(c["gamma"])
    x = with_kinks(X_SHAPE, c["seed"], scale=c["scale"])
    reference = lambda t: gamma * torch.where(t > 0, t, alpha * (torch.exp(t) - 1))  # noqa: E731
    check([node("Selu", ["x"], alpha=c["alpha"], gamma=c["gamma"])], x, {}, torch_reference(reference, x, c["seed"]))


@pytest.mark.parametrize("c", sweep(5, 13, alpha=(0.1, 3.0), scale=(0.5, 4.0)))
def test_celu(c):
    """Celu with seeded alpha: 1 where x > 0, e^(x / alpha) elsewhere."""
    x = with_kinks(X_SHAPE, c["seed"], scale=c["scale"])
    check([node("Celu", ["x"], alpha=c["alpha"])], x, {},
          torch_reference(lambda t: F.celu(t, f32(c["alpha"])), x, c["seed"]))


@pytest.mark.parametrize("c", sweep(5, 14, alpha=(-1.5, 2.0)))
def test_thresholded_relu(c):
    """ThresholdedRelu with seeded alpha (negative too): the gradient passes where x > alpha, not at alpha."""
    alpha = f32(c["alpha"])
    x = with_kinks(X_SHAPE, c["seed"], points=(alpha, 0.0), scale=2)
    check([node("ThresholdedRelu", ["x"], alpha=c["alpha"])], x, {},
          torch_reference(lambda t: F.threshold(t, alpha, 0.0), x, c["seed"]))


@pytest.mark.parametrize("c", sweep(6, 15, alpha=(0.05, 1.5), beta=(-0.5, 1.5), scale=(0.5, 6.0)))
def test_hard_sigmoid(c):
    """HardSigmoid with seeded alpha and beta: alpha strictly inside the linear piece, as F.hardtanh."""
    alpha, beta = f32(c["alpha"]), f32(c["beta"])
    x = normal(X_SHAPE, c["seed"]) * np.float32(c["scale"])
    check([node("HardSigmoid", ["x"], alpha=c["alpha"], beta=c["beta"])], x, {},
          torch_reference(lambda t: F.hardtanh(alpha * t + beta, 0.0, 1.0), x, c["seed"]))


PRELU_SLOPES = {"(C,1,1) per channel": (3, 1, 1), "(1,)": (1,), "scalar": (), "(C,H,W)": (3, 4, 5),
                "(W,) last axis": (5,)}


@pytest.mark.parametrize("slope_shape", list(PRELU_SLOPES))
def test_prelu(slope_shape):
    """PRelu with a constant slope broadcast to x: 1 where x > 0, the slope elsewhere (at 0 too, as torch)."""
    seed = list(PRELU_SLOPES).index(slope_shape)
    x = with_kinks(X_SHAPE, seed)
    slope = normal(PRELU_SLOPES[slope_shape], seed + 1) * np.float32(0.5)
    reference = lambda t: torch.where(t > 0, t, T(slope) * t)  # noqa: E731
    check([node("PRelu", ["x", "slope"])], x, {"slope": slope}, torch_reference(reference, x, seed))


def test_prelu_per_channel_is_torch_prelu():
    """PRelu with one slope per channel is nn.PReLU(num_parameters=C)."""
    x = with_kinks(X_SHAPE, 5)
    slope = normal((3, 1, 1), 6)
    check([node("PRelu", ["x", "slope"])], x, {"slope": slope},
          torch_reference(lambda t: F.prelu(t, T(slope.reshape(3))), x))


def test_prelu_with_a_computed_slope():
    """A slope computed from the input (per channel) gets its gradient too: dy * x where x < 0."""
    x = normal(X_SHAPE, 7)
    nodes = [node("ReduceMean", ["x"], ["m"], axes=[0, 2, 3], keepdims=0), node("Sigmoid", ["m"], ["s"]),
             node("Unsqueeze", ["s", "axes"], ["slope"]), node("PRelu", ["x", "slope"])]
    reference = lambda t: torch.where(t > 0, t, torch.sigmoid(t.mean((0, 2, 3))).reshape(3, 1, 1) * t)  # noqa: E731
    check(nodes, x, {"axes": np.array([1, 2], np.int64)}, torch_reference(reference, x), dynamic=())


# ------------------------------------------------------------------------------------------- Pow

POW_CONSTANT = {  # name: (exponent, input: seed -> x)
    "square": (np.array(2.0, np.float32), lambda s: normal(X_SHAPE, s)),
    "cube": (np.array(3.0, np.float32), lambda s: normal(X_SHAPE, s)),
    "square root": (np.array(0.5, np.float32), lambda s: np.abs(normal(X_SHAPE, s)) + np.float32(0.1)),
    "reciprocal square": (np.array(-2.0, np.float32), lambda s: away_from_zero(X_SHAPE, s)),
    "int64 exponent": (np.array(3, np.int64), lambda s: normal(X_SHAPE, s)),
    "per channel, with 0": (np.array([2.0, 0.0, 3.0], np.float32).reshape(3, 1, 1), lambda s: with_kinks(X_SHAPE, s)),
    "per element, fractional": (np.abs(normal((4, 5), 9)) + np.float32(0.5), lambda s: np.abs(normal(X_SHAPE, s)) + np.float32(0.1)),
}


@pytest.mark.parametrize("case", list(POW_CONSTANT))
def test_pow_constant_exponent(case):
    """x^c for constant exponents (broadcast; 0 gives gradient 0 even at x = 0, as torch)."""
    exponent, make_x = POW_CONSTANT[case]
    seed = list(POW_CONSTANT).index(case)
    x = make_x(seed)
    check([node("Pow", ["x", "c"])], x, {"c": exponent},
          torch_reference(lambda t: torch.pow(t, T(exponent)), x, seed))


def test_pow_constant_base():
    """c^x: the exponent's gradient y ln(c), with c broadcast per channel."""
    x = normal(X_SHAPE, 1)
    base = np.array([0.5, 2.0, 3.0], np.float32).reshape(3, 1, 1)
    check([node("Pow", ["c", "x"])], x, {"c": base}, torch_reference(lambda t: torch.pow(T(base), t), x))


def test_pow_both_computed():
    """sigmoid(x)^x: both operands depend on the input, their gradients are summed (x within +-3:
    further out sigmoid(x)^x grows as e^(x^2), and so does its float32 rounding)."""
    x = np.clip(normal(X_SHAPE, 2), -3, 3)
    nodes = [node("Sigmoid", ["x"], ["s"]), node("Pow", ["s", "x"])]
    check(nodes, x, {}, torch_reference(lambda t: torch.pow(torch.sigmoid(t), t), x))


def test_pow_zero_base_computed_exponent():
    """relu(x)^(x^2 + 1): where the base is 0, the exponent gets gradient 0 (as torch), not 0 * -inf."""
    x = with_kinks(X_SHAPE, 3)
    nodes = [node("Relu", ["x"], ["r"]), node("Mul", ["x", "x"], ["sq"]), node("Add", ["sq", "one"], ["p"]),
             node("Pow", ["r", "p"])]
    check(nodes, x, {"one": np.array(1.0, np.float32)},
          torch_reference(lambda t: torch.pow(F.relu(t), t * t + 1), x))


# ------------------------------------------------------------------- n-ary Max, Min, Sum, Mean


def ties_with(x, seed, fraction=0.5):
    """A constant shaped like x, equal to x at a seeded `fraction` of the places."""
    rng = np.random.default_rng(seed)
    c = normal(x.shape, seed)
    keep = rng.random(x.shape) < fraction
    c[keep] = x[keep]
    return c


EXTREMES = {"Max": lambda ts: torch.stack(torch.broadcast_tensors(*ts)).amax(0),
            "Min": lambda ts: torch.stack(torch.broadcast_tensors(*ts)).amin(0)}


@pytest.mark.parametrize("op", list(EXTREMES))
def test_max_min_two_operands_tie_split_as_torch(op):
    """Max / Min of x and a constant equal to it at half the places: torch.maximum / torch.minimum
    give each tied operand half the gradient, and so does the record."""
    x = normal(X_SHAPE, 1)
    c = ties_with(x, 2)
    fn = torch.maximum if op == "Max" else torch.minimum
    check([node(op, ["x", "c"])], x, {"c": c}, torch_reference(lambda t: fn(t, T(c)), x))


@pytest.mark.parametrize("op", list(EXTREMES))
def test_max_min_n_ary_with_ties(op):
    """Max / Min of four operands, x twice through other nodes and two constants that tie with x:
    k tied operands get dy / k each (torch.amax / amin over the stacked operands)."""
    x = normal(X_SHAPE, 3)
    c1, c2 = ties_with(x, 4, 0.4), ties_with(x, 5, 0.4)
    nodes = [node("Neg", ["x"], ["n"]), node(op, ["x", "c1", "n", "c2"])]
    check(nodes, x, {"c1": c1, "c2": c2}, torch_reference(lambda t: EXTREMES[op]([t, T(c1), -t, T(c2)]), x))


BROADCASTS = {"(C,1,1) constant": ((2, 3, 4, 5), (3, 1, 1)), "input broadcast": ((2, 1, 4, 1), (2, 3, 1, 5)),
              "constant adds a dim": ((2, 3, 4), (2, 1, 1, 4))}


@pytest.mark.parametrize("case", list(BROADCASTS))
@pytest.mark.parametrize("op", list(EXTREMES))
def test_max_min_broadcasting(op, case):
    """Max / Min with operands that broadcast (the input's gradient summed back to its shape)."""
    x_shape, c_shape = BROADCASTS[case]
    x, c = normal(x_shape, 6), normal(c_shape, 7)
    check([node(op, ["x", "c"])], x, {"c": c}, torch_reference(lambda t: EXTREMES[op]([t, T(c)]), x))


def test_sum_and_mean_n_ary():
    """Sum and Mean of three operands (x, relu(x), a broadcast constant): dy and dy / 3 to each."""
    x = normal(X_SHAPE, 8)
    c = normal((3, 1, 1), 9)
    nodes = [node("Relu", ["x"], ["r"]), node("Sum", ["x", "r", "c"], ["s"]), node("Mean", ["s", "x", "c"])]
    check(nodes, x, {"c": c}, torch_reference(lambda t: ((t + F.relu(t) + T(c)) + t + T(c)) / 3, x))


def test_sum_of_a_broadcast_input():
    """Sum where the input is the smaller operand: its gradient is summed over the broadcast axes."""
    x = normal((2, 1, 4), 10)
    c = normal((3, 2, 5, 4), 11)
    check([node("Sum", ["x", "c"])], x, {"c": c}, torch_reference(lambda t: t + T(c), x))


# ----------------------------------------------------------------- Cast, Where, Expand, Tile


def test_cast_between_float_types():
    """float -> float16 -> float and float -> double -> (times a double) -> float: the gradient is cast
    back at each step (the float16 rounding is in the forward only)."""
    x = normal(X_SHAPE, 12)
    c = normal((5,), 13).astype(np.float64)
    nodes = [node("Cast", ["x"], ["h"], "to_half", to=TensorProto.FLOAT16),
             node("Cast", ["h"], ["a"], "half_back", to=TensorProto.FLOAT),
             node("Cast", ["x"], ["d"], "to_double", to=TensorProto.DOUBLE), node("Mul", ["d", "c"], ["dc"]),
             node("Cast", ["dc"], ["b"], "double_back", to=TensorProto.FLOAT), node("Add", ["a", "b"])]
    check(nodes, x, {"c": c}, torch_reference(lambda t: t.half().double() + t * T(c), x))


def test_cast_to_an_integer_carries_no_gradient():
    """x * 2 + float(int64(x)): the path through the integer cast contributes no gradient (torch's trunc)."""
    x = normal(X_SHAPE, 14) * np.float32(3)
    nodes = [node("Cast", ["x"], ["i"], "to_int", to=TensorProto.INT64),
             node("Cast", ["i"], ["f"], "int_back", to=TensorProto.FLOAT),
             node("Mul", ["x", "two"], ["m"]), node("Add", ["m", "f"])]
    check(nodes, x, {"two": np.array(2.0, np.float32)}, torch_reference(lambda t: 2 * t + torch.trunc(t).detach(), x))


def test_where_of_two_computed_branches():
    """Where(x > 0, x * c, tanh(x)): each branch gets the gradient where it is selected; the condition none."""
    x = with_kinks(X_SHAPE, 15)
    c = normal((3, 1, 1), 16)
    nodes = [node("Greater", ["x", "zero"], ["cond"]), node("Mul", ["x", "c"], ["a"]), node("Tanh", ["x"], ["b"]),
             node("Where", ["cond", "a", "b"])]
    check(nodes, x, {"zero": np.array(0.0, np.float32), "c": c},
          torch_reference(lambda t: torch.where(t > 0, t * T(c), torch.tanh(t)), x))


@pytest.mark.parametrize("x_first", [True, False], ids=["x-selected-where-true", "x-selected-where-false"])
def test_where_broadcasting_with_a_constant(x_first):
    """Where with a constant condition and a constant branch that broadcast (an attention mask's
    masked_fill): the input's gradient is dy where it is selected, summed back over the broadcast."""
    x = normal((2, 1, 4, 5), 17)
    cond = np.random.default_rng(18).random((3, 1, 5)) < 0.5
    c = np.array(-1e4, np.float32)
    inputs = ["cond", "x", "c"] if x_first else ["cond", "c", "x"]
    reference = (lambda t: torch.where(torch.from_numpy(cond), t, T(c))) if x_first else \
        (lambda t: torch.where(torch.from_numpy(cond), T(c), t))
    check([node("Where", inputs)], x, {"cond": cond, "c": c}, torch_reference(reference, x))


EXPAND_CASES = {  # name: (x shape, target shape)
    "size-1 axis": ((2, 1, 4), [2, 3, 4]),
    "adds a leading dim": ((2, 1, 4), [3, 2, 5, 4]),
    "smaller target (broadcast both ways)": ((2, 3, 1), [1, 1, 6]),
    "ones: no copy": ((2, 3, 4), [1, 1]),
}


@pytest.mark.parametrize("case", list(EXPAND_CASES))
def test_expand(case):
    """Expand to a shape (numpy broadcasting of the input and the shape): copies' gradients summed."""
    x_shape, target = EXPAND_CASES[case]
    x = normal(x_shape, len(target))
    out = np.broadcast_shapes(x_shape, tuple(target))
    check([node("Expand", ["x", "shape"])], x, {"shape": np.array(target, np.int64)},
          torch_reference(lambda t: t.expand(out), x))


@pytest.mark.parametrize("repeats", [[1, 2, 3], [2, 1, 1], [1, 1, 1], [3, 2, 2]])
def test_tile(repeats):
    """Tile along every axis, the dynamic batch axis too: the gradient is summed over the tiles."""
    x = normal((2, 3, 4), sum(repeats))
    check([node("Tile", ["x", "repeats"])], x, {"repeats": np.array(repeats, np.int64)},
          torch_reference(lambda t: t.repeat(*repeats), x))


def test_tile_of_a_computed_repeat_count():
    """Tile whose repeats are computed at run time (from the input's shape): read when the model runs."""
    x = normal((2, 3), 19)
    nodes = [node("Shape", ["x"], ["s"]), node("Slice", ["s", "zero", "one"], ["n"]),
             node("Concat", ["one", "n"], ["repeats"], axis=0), node("Tile", ["x", "repeats"])]
    consts = {"zero": np.array([0], np.int64), "one": np.array([1], np.int64)}
    check(nodes, x, consts, torch_reference(lambda t: t.repeat(1, 2), x))


# -------------------------------------------------------------------------------------- reductions

REDUCE_CASES = [([1], 1), ([2, 3], 1), ([-1], 0), ([0, 2], 0), (None, 1), (None, 0)]


def tied(seed, shape):
    """Small integers (as floats): many ties for the maximum and minimum."""
    return np.random.default_rng(seed).integers(-2, 3, shape).astype(np.float32)


def reduce_node(op, axes, keepdims, opset):
    """The reduction with its axes as an attribute (opset 17) or as an input (opset 18)."""
    if axes is None:
        return node(op, ["x"], keepdims=keepdims), {}
    if opset >= 18:
        return node(op, ["x", "axes"], keepdims=keepdims), {"axes": np.array(axes, np.int64)}
    return node(op, ["x"], keepdims=keepdims, axes=axes), {}


REDUCTIONS = {  # op: (torch equivalent (t, dims, keepdim), input: seed -> x)
    "ReduceMax": (lambda t, d, k: t.amax(d, keepdim=k), tied),
    "ReduceMin": (lambda t, d, k: t.amin(d, keepdim=k), tied),
    "ReduceL2": (lambda t, d, k: torch.linalg.vector_norm(t, dim=d, keepdim=k), lambda s, shape: normal(shape, s)),
    "ReduceSumSquare": (lambda t, d, k: (t * t).sum(d, keepdim=k), lambda s, shape: normal(shape, s)),
    "ReduceLogSumExp": (lambda t, d, k: torch.logsumexp(t, d, keepdim=k),
                        lambda s, shape: normal(shape, s) * np.float32(5)),
}


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("axes, keepdims", REDUCE_CASES)
@pytest.mark.parametrize("op", list(REDUCTIONS))
def test_reduction(op, axes, keepdims, opset):
    """ReduceMax / ReduceMin (ties split evenly, as torch.amax / amin), ReduceL2, ReduceSumSquare and
    ReduceLogSumExp, over axes given as an attribute (opset 17) or an input (18), keepdims 0/1."""
    fn, make_x = REDUCTIONS[op]
    seed = REDUCE_CASES.index((axes, keepdims))
    x = make_x(seed, (2, 3, 4, 5))
    dims = tuple(axes) if axes is not None else tuple(range(4))
    reduction, consts = reduce_node(op, axes, keepdims, opset)
    check([reduction], x, consts, torch_reference(lambda t: fn(t, dims, bool(keepdims)), x, seed), opset=opset)


def test_reduce_max_noop_with_empty_axes():
    """ReduceMax with no axes and noop_with_empty_axes=1 is the identity (opset 18)."""
    x = normal((2, 3, 4))
    check([node("ReduceMax", ["x"], noop_with_empty_axes=1)], x, {}, torch_reference(lambda t: t, x), opset=18)


def test_reduce_l2_of_a_zero_slice():
    """ReduceL2 of a slice that is all zeros (after a ReLU): gradient 0 there, as torch's norm, not NaN."""
    x = -np.abs(normal((2, 3, 4), 20))
    x[:, 0] = np.abs(x[:, 0])
    nodes = [node("Relu", ["x"], ["r"]), node("ReduceL2", ["r"], axes=[2], keepdims=0)]
    check(nodes, x, {}, torch_reference(lambda t: torch.linalg.vector_norm(F.relu(t), dim=2), x))


def test_nonlinear_reduction_noop_is_refused():
    """ReduceSumSquare with noop_with_empty_axes=1 and no axes (spec and reference implementation
    disagree on it) is refused with a message naming the node."""
    x = normal((2, 3))
    with pytest.raises(nnxplain.UnsupportedError, match="node 'reducesumsquare'.*noop_with_empty_axes"):
        check([node("ReduceSumSquare", ["x"], noop_with_empty_axes=1)], x, {},
              torch_reference(lambda t: t * t, x), opset=18)


def cumsum_reference(axis, exclusive, reverse):
    def fn(t):
        s = t.flip(axis) if reverse else t
        y = s.cumsum(axis) - (s if exclusive else 0)
        return y.flip(axis) if reverse else y
    return fn


@pytest.mark.parametrize("exclusive, reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("axis", [1, -1, 0])
def test_cum_sum(axis, exclusive, reverse):
    """CumSum along an axis (the batch axis too), with every exclusive / reverse combination."""
    x = normal((2, 3, 4), axis % 3 + 3 * exclusive + 6 * reverse)
    nodes = [node("CumSum", ["x", "axis"], exclusive=exclusive, reverse=reverse)]
    check(nodes, x, {"axis": np.array(axis, np.int64)}, torch_reference(cumsum_reference(axis, exclusive, reverse), x))


def test_cum_sum_against_finite_differences():
    """CumSum (exclusive, reverse) once more against float64 finite differences through onnx.reference,
    so that the torch reference's own reading of exclusive / reverse is checked too."""
    x = normal((2, 3, 4), 21)
    consts = {"axis": np.array(2, np.int64)}
    nodes = [node("CumSum", ["x", "axis"], exclusive=1, reverse=1)]
    reference = finite_difference_reference(nodes, x, consts)
    np.testing.assert_allclose(reference.y, cumsum_reference(2, 1, 1)(T(x)).numpy(), rtol=1e-6, atol=1e-6)
    check(nodes, x, consts, reference)


# --------------------------------------------------------------------------- the records' facts

ACTIVATIONS = {  # op: attributes (and a constant slope for PRelu), the opset it needs
    "Erf": ({}, 17), "Gelu": ({"approximate": "tanh"}, 20), "Exp": ({}, 17), "Log": ({}, 17), "Sqrt": ({}, 17),
    "Reciprocal": ({}, 17), "Neg": ({}, 17), "Abs": ({}, 17), "Selu": ({}, 17), "Celu": ({"alpha": 0.7}, 17),
    "Softsign": ({}, 17), "ThresholdedRelu": ({"alpha": -0.5}, 17), "HardSigmoid": ({}, 17),
    "HardSwish": ({}, 17), "PRelu": ({}, 17),
}
CATEGORIES = {
    "activation": set(ACTIVATIONS),
    "routing": {"Max", "Min", "Where", "Cast", "Expand", "Tile", "ReduceMax", "ReduceMin"},
    "proportional": {"Sum", "Mean", "CumSum"},
    "nonlinear": {"Pow", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"},
}


@pytest.mark.parametrize("category", list(CATEGORIES))
def test_categories(category):
    """Pointwise one-input nonlinearities are activations; selections and copies are routing (LRP
    follows the gradient: exact); sums are proportional (the z-rule); Pow and the nonlinear
    reductions are nonlinear (LRP refuses them)."""
    members = sorted(CATEGORIES[category])
    assert {op: ops.RECORDS[op].category for op in members} == dict.fromkeys(members, category)
    if category == "activation":
        assert all(ops.RECORDS[op].pointwise for op in CATEGORIES[category])


def constants_of(op) -> dict:
    """The constant inputs an activation takes besides x: PRelu's slope."""
    return {"slope": np.array([0.3], np.float32)} if op == "PRelu" else {}


def activation_output(op, x):
    """The activation (with its test attributes) evaluated on x, and a graphsurgeon node of it."""
    attrs, opset = ACTIVATIONS[op]
    consts = constants_of(op)
    model = one_op_model([node(op, ["x", *consts], **attrs)], x.shape, consts, opset=opset)
    inputs = [gs.Variable("x"), *(gs.Constant(k, v) for k, v in consts.items())]
    return session(model).run(None, {"x": x})[0], gs.Node(op, attrs=attrs, inputs=inputs)


@pytest.mark.parametrize("op", list(ACTIVATIONS))
def test_activation_facts_are_true(op):
    """Each activation's zero_preserving and nonnegative facts are what the op computes: f(0) = 0
    exactly when the record says so; an output claimed >= 0 is (on inputs of both signs, or on
    nonnegative inputs where the claim is conditional on the input)."""
    x = np.concatenate([np.zeros(1, np.float32), normal((400,), 22) * np.float32(4)]).reshape(1, -1)
    y, record_node = activation_output(op, x)
    assert ops.zero_preserving(record_node) == (y[0, 0] == 0), f"f(0) = {y[0, 0]}"
    always = ops.nonnegative_output(record_node, lambda t: False)
    given_input = ops.nonnegative_output(record_node, lambda t: True)
    valid = ~np.isnan(y)  # Log and Sqrt of negative inputs
    assert always == bool((y[valid] >= 0).all())
    y_pos, _ = activation_output(op, np.abs(x))
    assert given_input == bool((y_pos >= 0).all())


def test_hard_sigmoid_zero_preserving_depends_on_beta():
    """HardSigmoid maps 0 to clip(beta, 0, 1): zero-preserving exactly when beta <= 0."""
    assert not ops.zero_preserving(gs.Node("HardSigmoid", attrs={}))
    assert ops.zero_preserving(gs.Node("HardSigmoid", attrs={"beta": -0.2}))


# ------------------------------------------------------------------------ what LRP does with them

LRP_ACTIVATIONS = ["Erf", "Gelu", "Exp", "Neg", "Abs", "Selu", "Celu", "Softsign", "ThresholdedRelu", "HardSigmoid",
                   "HardSwish", "PRelu"]  # (Log, Sqrt, Reciprocal: not defined on all of the test's signed inputs)


def in_front_of_dense(front, x_width=6, consts=None, opset=17) -> onnx.ModelProto:
    """test_ops.dense_model's layers (and weights) reading `a`, which the nodes `front` compute from the
    input x [N, x_width]."""
    model = dense_model(None)
    graph = model.graph
    layers = list(graph.node)
    layers[0].input[0] = "a"
    del graph.node[:]
    graph.node.extend(list(front) + layers)
    graph.input[0].CopyFrom(oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", x_width]))
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in (consts or {}).items())
    model.opset_import[0].version = opset
    return model


def dense_model_at(op, opset):
    attrs, _ = ACTIVATIONS[op]
    consts = constants_of(op)
    return in_front_of_dense([node(op, ["x", *consts], ["a"], name="act", **attrs)], consts=consts, opset=opset)


@pytest.mark.parametrize("method", lrp_methods())
@pytest.mark.parametrize("op", LRP_ACTIVATIONS)
def test_lrp_methods_treat_the_new_activations_as_activations(op, method):
    """Every LRP and Deep Taylor method gives each new activation the rule it gives Tanh; where that
    rule passes relevance through, the relevance at x of x -> act -> dense layers equals the relevance
    at act(x) of the dense layers alone."""
    rule = load_method(method).rule_for
    assert rule(gs.Node(op, "act"))[0] == rule(gs.Node("Tanh", "act"))[0]
    params = required_params(method)
    opset = ACTIVATIONS[op][1]
    if rule(gs.Node(op, "act"))[0] == "refuse":
        with pytest.raises(nnxplain.NnxplainError, match="node 'act'"):
            nnxplain.compile(dense_model_at(op, opset), [method], params=params)
        return
    x = normal((4, 6), 3) * np.float32(2)
    act, _ = activation_output(op, x)
    through, relevance = session(nnxplain.compile(dense_model_at(op, opset), [method], params=params)).run(None, {"x": x})
    without, expected = session(nnxplain.compile(dense_model(None), [method], params=params)).run(None, {"x": act})
    np.testing.assert_array_equal(through, without)
    assert np.abs(relevance).max() > 0
    assert relative_error(relevance, expected) <= TOL


@pytest.mark.parametrize("method", lrp_methods())
def test_lrp_methods_route_and_share_as_for_max_pooling_and_add(method):
    """Under every LRP method the new routing ops get MaxPool's rule and the new sums Add's."""
    rule = load_method(method).rule_for
    for op in CATEGORIES["routing"]:
        assert rule(gs.Node(op, "n"))[0] == rule(gs.Node("MaxPool", "n"))[0], op
    for op in CATEGORIES["proportional"]:
        assert rule(gs.Node(op, "n"))[0] == rule(gs.Node("Add", "n"))[0], op


def test_lrp_relevance_through_tile_is_the_sum_over_its_copies():
    """lrp.epsilon through x -> Tile(x, [1, 2]) -> dense layers: each element of x gets the relevance of
    both its copies, which is what the dense layers alone give the tiled input."""
    x = normal((4, 3), 23)
    model = in_front_of_dense([node("Tile", ["x", "repeats"], ["a"], name="tile")], x_width=3,
                              consts={"repeats": np.array([1, 2], np.int64)})
    _, relevance = session(nnxplain.compile(model, ["lrp.epsilon"])).run(None, {"x": x})
    _, expected = session(nnxplain.compile(dense_model(None), ["lrp.epsilon"])).run(None, {"x": np.tile(x, (1, 2))})
    assert np.abs(relevance).max() > 0
    assert relative_error(relevance, expected[:, :3] + expected[:, 3:]) <= TOL


NONLINEAR_FRONTS = {  # op: the nodes from x [N, 6] to a [N, 6], the op's node named 'act'
    "Pow": [node("Pow", ["x", "two"], ["a"], name="act")],
    **{op: [node(op, ["x"], ["reduced"], name="act", axes=[1], keepdims=1),
           node("Add", ["x", "reduced"], ["a"], name="add")]
       for op in ("ReduceL2", "ReduceSumSquare", "ReduceLogSumExp")},
}


@pytest.mark.parametrize("method", lrp_methods())
@pytest.mark.parametrize("op", list(NONLINEAR_FRONTS))
def test_lrp_methods_refuse_the_nonlinear_ops_by_name(op, method):
    """Pow and the nonlinear reductions are refused by every LRP method with a message naming the node
    (never a silent gradient); the gradient method compiles the same model."""
    model = in_front_of_dense(NONLINEAR_FRONTS[op], consts={"two": np.array(2.0, np.float32)})
    with pytest.raises(nnxplain.NnxplainError, match="node 'act'"):
        nnxplain.compile(model, [method], params=required_params(method))
    nnxplain.compile(model, ["gradient"])
