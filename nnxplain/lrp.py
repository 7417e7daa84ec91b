"""LRP and Deep Taylor rules: how relevance crosses one node, registered in nnxplain.rule_registry.

Every rule for a linear layer (Conv of any rank, grouped and depthwise; Gemm; MatMul with a constant
weight) is one specification of the same computation, zennit's BasicHook (see `basic`):

    z = sum_k forward(x_k, W_k) (+ b')      the layer run on modified inputs / weights
    s = R / stabilized(z)
    R_in = sum_k x_k * transpose(s, W_k)

A rule says how to modify the weights (W+, W + gamma W+, W^2, ones), whether the bias joins z, the
stabilizer (SafeDivide, epsilon, or any function of z), whether x is replaced by ones (relevance spread
by the weights alone) and the bounds of z^B. Weight modifications are computed with numpy when the
graph is compiled and stored as constants; only the activations' sign split runs in the graph.
alpha-beta has its own path: it reads its negative pre-activation off the forward pass's output and
transposes all its terms in one pass of the layer, measured faster (benchmarks/README.md, LRP).

Divisions use iNNvestigate's SafeDivide (eps = 1e-7 where z == 0, and here also where z is subnormal)
except the epsilon rule, whose stabilizer is z + epsilon * sign(z) with sign(0) = +1 (built with
Where: ONNX's Sign(0) is 0); with epsilon = 0 it is the SafeDivide of z.

Nodes that are not linear layers:
  - `pass`: relevance passes unchanged (activations: Relu, LeakyRelu, Clip, Sigmoid, Tanh).
  - `z` / `epsilon` on ops linear in their computed input (Add, Sub, AveragePool, GlobalAveragePool,
    ReduceMean, ReduceSum, and Mul / Div by a constant): relevance in proportion to each input's
    contribution, R_i = x_i * vjp(R / z)_i. A constant operand (a bias, BatchNormalization's shift)
    absorbs its share; Mul / Div by a constant pass relevance unchanged.
  - `gradient` (propagation.py): max pooling (winner takes all) and routing ops.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

from .emitter import FLOAT
from . import ops
from .layer import CHANNELS_FIRST, LinearLayer
from .ops import LINEAR, VJP, having
from .params import flag, number, numbers
from .rule_registry import RULES, register

SAFE_EPS = 1e-7  # iNNvestigate's SafeDivide factor (Keras' epsilon)
TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32
LINEAR_OPS = having(category="linear")
PROPORTIONAL_OPS = having(category="proportional")
PASS_OPS = having(pointwise=True)  # relevance may pass unchanged: activations, Identity, Dropout


# ------------------------------------------------------------------------------------ helpers

def safe(e, z):
    """z with zeros replaced by a tiny positive number (iNNvestigate's SafeDivide), and so are the
    subnormal values (|z| below the smallest normal float32): dividing by one overflows to inf, and
    ONNX Runtime's kernels may flush one operand to 0 and not the other (0 * inf = NaN)."""
    return e.Where(e.Less(e.Abs(z), TINY), SAFE_EPS, z)


def stabilized(e, z, stabilizer: float | Callable, nonnegative: bool = False):
    """The denominator of R / z. A float epsilon: z + epsilon * sign(z), sign(0) = +1 (just z + epsilon
    where z is `nonnegative`); an epsilon below the smallest normal float (0: the z-rule) cannot keep
    it away from 0, and iNNvestigate's SafeDivide guards it instead. A callable: `stabilizer(e, z)`."""
    if callable(stabilizer):
        return stabilizer(e, z)
    if stabilizer < TINY:
        return safe(e, z)
    if nonnegative:
        return e.Add(z, float(stabilizer))
    return e.Add(z, e.Where(e.GreaterOrEqual(z, 0.0), float(stabilizer), float(-stabilizer)))


def positive(e, x):
    return e.Relu(x)


def negative(e, x):
    return e.Neg(e.Relu(e.Neg(x)))  # min(x, 0)


class Layer(LinearLayer):
    """A linear node as the LRP rules use it: its weight and bias views (nnxplain.layer), the sign of
    the scale its forward applies to each (Gemm's alpha and beta, so that W+ means the weights whose
    effect is positive), and the graph it emits."""

    def __init__(self, node: gs.Node, rule: str):
        try:
            super().__init__(node)
        except ValueError:
            found = "a computed weight" if node.op in LINEAR else f"op {node.op}"
            raise ValueError(f"rule '{rule}' needs a linear layer (Conv, Gemm, MatMul) with a constant weight, "
                             f"found {found}") from None
        if self.bias_tensor is not None and self.bias is None:
            raise ValueError(f"rule '{rule}' needs a constant bias, found a computed one ('{self.bias_tensor.name}')")
        self.rule = rule
        self.w, self.b = self.weight, self.bias
        self.w_sign, self.b_sign = float(np.sign(self.alpha)), float(np.sign(self.beta))

    # weight and bias parts (numpy, compile time)
    def w_pos(self):
        return positive_part(self.w, self.w_sign)

    def w_neg(self):
        return self.w * (self.w_sign * self.w < 0)

    def b_pos(self):
        return None if self.b is None else self.b * (self.b_sign * self.b > 0)

    def b_neg(self):
        return None if self.b is None else self.b * (self.b_sign * self.b < 0)

    # graph emission
    def const(self, e, a):
        return None if a is None else e.const(a.astype(FLOAT))

    def forward(self, e, x, w, b=None):
        return self.lin.forward(e, self.node, x, self.const(e, w), self.const(e, b))

    def bias_term(self, e, b):
        """b as the forward adds it to the output (Gemm: times beta; Conv: per channel)."""
        if self.node.op == "Gemm":
            return e.const((self.beta * b).astype(FLOAT))
        channels_first = self.node.op in CHANNELS_FIRST
        rank = len(self.node.outputs[0].shape or []) or (self.w.ndim if channels_first else 2)
        return e.const(b.reshape([-1] + [1] * (rank - 2)).astype(FLOAT) if channels_first else b.astype(FLOAT))

    def transpose(self, e, s, w):
        return self.lin.transpose(e, self.node, s, self.const(e, w))

    def channel_axis(self) -> int:
        return 1 if self.node.op in CHANNELS_FIRST else -1

    def stacked_transpose(self, e, signals: list, blocks: list[list[np.ndarray]]):
        """Several transposes in one pass of the layer: out_j = sum_i transpose(signals[i], blocks[i][j]),
        as one transpose of the signals concatenated along the channel axis with the block weight.
        None where the layer cannot be stacked (grouped Conv, a weight that is not a matrix)."""
        if self.node.op == "ConvTranspose" or (self.node.op == "Conv" and self.node.attrs.get("group", 1) != 1) \
                or (self.node.op != "Conv" and self.w.ndim != 2) \
                or (self.node.op == "Gemm" and self.node.attrs.get("transA", 0)):
            return None
        if self.out_in_layout():
            w = np.concatenate([np.concatenate(row, axis=1) for row in blocks], axis=0)
        else:
            w = np.concatenate([np.concatenate([row[j] for row in blocks], axis=1) for j in range(len(blocks[0]))], axis=0)
        c = self.transpose(e, e.Concat(*signals, axis=self.channel_axis()), w)
        if len(blocks[0]) == 1:
            return [c]
        n_in = blocks[0][0].shape[1] if self.out_in_layout() else blocks[0][0].shape[0]
        return e.op("Split", c, e.ints([n_in] * len(blocks[0])), axis=self.channel_axis(), outputs=len(blocks[0]))

    def filled(self, e, value: float | list, name: str = "value"):
        """A tensor shaped like x, every entry `value`; a list: one value per input channel (parameter `name`)."""
        if not isinstance(value, (list, tuple)):
            return e.ConstantOfShape(e.shape_of(self.x), value=np.array([value], FLOAT))
        channels = self.input_channels()
        if len(value) != channels:
            raise ValueError(f"rule '{self.rule}': {name} has {len(value)} values (one per input channel) but the "
                             f"layer has {channels} input channels")
        if self.node.op == "Gemm" and self.node.attrs.get("transA", 0):
            raise ValueError(f"rule '{self.rule}': per-channel {name} needs a Gemm without transA")
        rank = len(self.weight.shape) if self.node.op in CHANNELS_FIRST else 1  # channels: axis 1 (Conv), last (Gemm, MatMul)
        per_channel = np.array(value, FLOAT).reshape([-1] + [1] * (rank - 2))
        return e.Expand(e.const(per_channel), e.shape_of(self.x))

    def result(self, r_in):
        out = [None] * len(self.node.inputs)
        out[self.lin.x] = r_in
        return out


def nonnegative(t: gs.Tensor) -> bool:
    """True where the graph guarantees t >= 0 (a ReLU's output, or pooling / routing of one), so the
    negative part of t is zero and rules can skip it."""
    if not t.inputs:
        return isinstance(t, gs.Constant) and bool((t.values >= 0).all())
    return ops.nonnegative_output(t.inputs[0], nonnegative)


ROUTING = having(category="routing")


def zero_where_zero(graph: gs.Graph, rule_name, nodes=None) -> set[str]:
    """Names of the tensors whose relevance is provably 0 wherever the tensor itself is 0, given the
    rule each consumer uses (`rule_name(node)`): every consumer's rule multiplies by its input, or
    passes / routes relevance from outputs that have the property. Graph outputs are left out.
    `nodes`: the forward graph's nodes (default: all); consumers outside it (the backward passes of
    methods compiled before) carry no relevance and are not asked."""
    outputs = {t.name for t in graph.outputs}
    nodes = list(graph.nodes) if nodes is None else list(nodes)
    forward = {id(n) for n in nodes}
    known: set[str] = set()
    for node in reversed(nodes):
        for t in node.inputs:
            if isinstance(t, gs.Constant) or t.name in outputs or t.name in known:
                continue
            if all(_keeps_zero(c, t, rule_name, known) for c in t.outputs if id(c) in forward):
                known.add(t.name)
    return known


def _keeps_zero(consumer, t, rule_name, known) -> bool:
    try:
        rule = rule_name(consumer)
    except Exception:  # no rule for this node: say nothing about it
        return False
    if RULES[rule].times_input:
        return consumer.op in PROPORTIONAL_OPS or (consumer.op in LINEAR and consumer.inputs[0] is t)
    passes = (rule == "pass" and ops.zero_preserving(consumer)) or (rule == "gradient" and consumer.op in ROUTING)
    return passes and all(o.name in known for o in consumer.outputs)


def relu_after(e, node, zero_where_zero) -> gs.Tensor | None:
    """The output a = Relu(z) of a linear node whose output z only feeds that ReLU, when the relevance
    at a is 0 wherever a is 0 (see zero_where_zero): then z may be read as a. Where z > 0, a = z;
    where z <= 0 the relevance is 0, so the quotient R / z is 0 whatever stands in for z. Reading a
    instead of z lets ONNX Runtime fuse the forward Conv + Relu."""
    z = node.outputs[0]
    consumers = list(z.outputs)
    if len(consumers) != 1 or consumers[0].op != "Relu" or any(t is z for t in e.graph.outputs):
        return None
    a = consumers[0].outputs[0]
    return a if a.name in zero_where_zero else None


# ------------------------------------------------------------------------------------ linear rules

def basic(e, node, dy, rule: str, modify: Callable | None = None, bias: bool = True, stabilizer=0.0,
          input_free: bool = False, bounds: tuple | None = None, zero_where_zero=()):
    """The z -> s -> R computation every z-family rule specifies (zennit's BasicHook):

        z = forward(x', W', b') - forward(low, W+) - forward(high, W-)      (the last two: `bounds`)
        R_in = x' * transpose(s, W') - low * transpose(s, W+) - high * transpose(s, W-),  s = R / stabilized(z)

    `modify(p, sign)`: W' and b' from the stored weight and bias (sign: the sign of the scale the op
    applies to them, Gemm's alpha and beta); None keeps them. `bias`: whether b' joins z. `stabilizer`:
    a float epsilon or a function of z (see stabilized). `input_free`: x' = 1 and R_in = transpose(s, W')
    (relevance spread by the weights alone). `bounds`: (low, high), each a float or one per input
    channel. Where z is the node's own output (weights and bias unmodified) it is read off the forward
    pass, or off its ReLU (relu_after)."""
    layer = Layer(node, rule)
    w = layer.w if modify is None else modify(layer.w, layer.w_sign)
    b = None if not bias or layer.b is None else layer.b if modify is None else modify(layer.b, layer.b_sign)
    x = layer.filled(e, 1.0) if input_free else layer.x
    terms = [(x, w)]
    if bounds is not None:  # z^B: the lowest contribution the bounded input can make, subtracted
        terms += [(layer.filled(e, bounds[0], "low"), -layer.w_pos()), (layer.filled(e, bounds[1], "high"), -layer.w_neg())]
    a = None
    if modify is None and not input_free and bounds is None and (bias or layer.b is None):
        a = relu_after(e, node, zero_where_zero)
        z = a or node.outputs[0]
    else:
        z = layer.forward(e, x, w, b)
        for x_k, w_k in terms[1:]:
            z = e.Add(z, layer.forward(e, x_k, w_k))
    s = e.Div(dy, stabilized(e, z, stabilizer, nonnegative=a is not None))
    r = layer.transpose(e, s, w) if input_free else e.Mul(x, layer.transpose(e, s, w))
    for x_k, w_k in terms[1:]:
        r = e.Add(r, e.Mul(x_k, layer.transpose(e, s, w_k)))
    return layer.result(r)


def positive_part(p, sign):
    """The weights (or bias) whose effect is positive."""
    return p * (sign * p > 0)


def _proportional(e, node, dy, stabilizer):
    """R_i = x_i * vjp(R / z)_i for an op linear in its computed inputs (z is the node's output)."""
    live = [i for i, t in enumerate(node.inputs) if not isinstance(t, gs.Constant)]
    if node.op in ("Mul", "Div") and (len(live) != 1 or (node.op == "Div" and live != [0])):
        raise ValueError(f"the z-rule on {node.op} needs one computed operand and a constant "
                         f"(a scale), found {len(live)} computed operands")
    grads = VJP[node.op](e, node, e.Div(dy, stabilized(e, node.outputs[0], stabilizer)))
    return [e.Mul(node.inputs[i], g) if i in live and g is not None else None for i, g in enumerate(grads)]


IGNORE_BIAS = {"ignore_bias": flag(False)}  # iNNvestigate's _IB methods: the bias does not join z
ZERO_WHERE_ZERO = ("zero_where_zero",)      # lets a rule read z off the ReLU after the layer (relu_after)


@register("z", LINEAR_OPS | PROPORTIONAL_OPS, "LRP-z: relevance in proportion to the contributions x_i w_ij",
          params=IGNORE_BIAS, needs=ZERO_WHERE_ZERO, times_input=True)
def lrp_z(e, node, dy, ignore_bias, zero_where_zero):
    """LRP-z (LRP-0): R_i = x_i w_ij / z_j R_j; `ignore_bias` drops b from z (iNNvestigate's _IB)."""
    if node.op not in LINEAR:
        return _proportional(e, node, dy, 0.0)
    return basic(e, node, dy, "z", bias=not ignore_bias, zero_where_zero=zero_where_zero)


@register("epsilon", LINEAR_OPS | PROPORTIONAL_OPS, "LRP-epsilon: z + epsilon * sign(z) absorbs weak relevance",
          params={"epsilon": number(1e-7, lambda v: v >= 0, "a finite number >= 0 (0: the z-rule with its safe division)"),
                  **IGNORE_BIAS}, needs=ZERO_WHERE_ZERO, times_input=True)
def lrp_epsilon(e, node, dy, epsilon, ignore_bias, zero_where_zero):
    """LRP-epsilon: z stabilized by epsilon * sign(z) (sign(0) = +1); reuses the forward pre-activation."""
    if node.op not in LINEAR:
        return _proportional(e, node, dy, epsilon)
    return basic(e, node, dy, "epsilon", bias=not ignore_bias, stabilizer=epsilon, zero_where_zero=zero_where_zero)


@register("gamma", LINEAR_OPS, "LRP-gamma: W + gamma W+ favours positive contributions",
          params={"gamma": number(0.25, lambda v: v >= 0, "a finite number >= 0"), **IGNORE_BIAS}, times_input=True)
def lrp_gamma(e, node, dy, gamma, ignore_bias):
    """LRP-gamma: weights (and bias) W + gamma * W+ favour positive contributions."""
    return basic(e, node, dy, "gamma", modify=lambda p, sign: p + gamma * positive_part(p, sign), bias=not ignore_bias)


def _check_alpha_beta(params: dict):
    alpha_beta_params(params.get("alpha"), params.get("beta"))


@register("alpha_beta", LINEAR_OPS, "LRP-alpha-beta: alpha positive minus beta negative shares",
          params={"alpha": number(None), "beta": number(None, lambda v: v >= 0, "a finite number >= 0"),
                  **IGNORE_BIAS, "bias_split": flag(True)},
          needs=ZERO_WHERE_ZERO, times_input=True, check=_check_alpha_beta)
def lrp_alpha_beta(e, node, dy, alpha, beta, ignore_bias, bias_split, zero_where_zero):
    """LRP-alpha-beta: alpha * (positive contributions' share) - beta * (negative contributions' share).

    Positive contributions are x+ W+ and x- W-, negative ones x+ W- and x- W+. With `bias_split`
    (zennit) b+ joins the positive and b- the negative denominator; without it (iNNvestigate) the
    whole bias joins both.
    """
    alpha, beta = alpha_beta_params(alpha, beta)
    layer = Layer(node, "alpha_beta")
    x = layer.x
    wp, wn = layer.w_pos(), layer.w_neg()
    if ignore_bias or layer.b is None:
        bp = bn = None
    elif bias_split:
        bp, bn = layer.b_pos(), layer.b_neg()
    else:
        bp = bn = layer.b
    zero = np.zeros(1)
    b_node = zero if layer.b is None else layer.b

    def plus_bias(z, b):
        b = zero if b is None else b
        return e.Add(z, layer.bias_term(e, np.broadcast_to(b, np.shape(b_node)).copy())) if np.any(b != 0) else z

    # The node's own output is x W + b (where relu_after applies, its ReLU's output stands in for it):
    # the negative pre-activation is that minus the positive one, which saves passes of the layer.
    # Its quotient can be huge where there are no negative contributions (z- ~ 0 up to rounding), but
    # then every term it multiplies below is exactly 0: the transposes stay split by sign for that.
    z_node = relu_after(e, node, zero_where_zero) or node.outputs[0]
    signed = not nonnegative(x)  # after a ReLU the negative part of x is 0: its terms are skipped
    xp = positive(e, x) if signed else x
    xn = negative(e, x) if signed else None
    x_pos = layer.forward(e, xp, wp)  # positive contributions x+ W+ + x- W-
    if signed:
        x_pos = e.Add(x_pos, layer.forward(e, xn, wn))
    z_pos = plus_bias(x_pos, bp)
    s_pos = e.Div(dy, safe(e, z_pos))
    signals, blocks = [s_pos], [[wp * alpha, wn * alpha] if signed else [wp * alpha]]
    if beta:
        z_neg = plus_bias(e.Sub(z_node, x_pos), (zero if bn is None else bn) - b_node)  # x+ W- + x- W+ + bn
        signals.append(e.Div(dy, safe(e, z_neg)))
        blocks.append([wn * -beta, wp * -beta] if signed else [wn * -beta])
    # c+ (what x+ multiplies) and c- (what x- multiplies): all transposes in one pass where the layer allows
    cs = layer.stacked_transpose(e, signals, blocks) if len(signals) * len(blocks[0]) > 1 else None
    if cs is None:
        cs = [e.add_all([layer.transpose(e, sig, row[j]) for sig, row in zip(signals, blocks)])
              for j in range(len(blocks[0]))]
    r = e.Mul(xp, cs[0])
    if signed:
        r = e.Add(r, e.Mul(xn, cs[1]))
    return layer.result(r)


def alpha_beta_params(alpha, beta) -> tuple[float, float]:
    """iNNvestigate's convention: give alpha or beta (the other follows from alpha - beta = 1) or both."""
    if alpha is None and beta is None:
        raise ValueError("rule 'alpha_beta' needs alpha or beta (alpha - beta = 1)")
    alpha = float(beta) + 1.0 if alpha is None else float(alpha)
    beta = alpha - 1.0 if beta is None else float(beta)
    if abs(alpha - beta - 1.0) > 1e-9 or beta < 0:
        raise ValueError(f"rule 'alpha_beta' needs alpha - beta = 1 and beta >= 0, got alpha={alpha}, beta={beta}")
    return alpha, beta


@register("z_plus_fast", LINEAR_OPS, "z+ with W+ on the input as it is, no bias", times_input=True)
def lrp_z_plus_fast(e, node, dy):
    """z+ fast (iNNvestigate): W+ applied to x as it is (assumes x >= 0), no bias."""
    return basic(e, node, dy, "z_plus_fast", modify=positive_part, bias=False)


@register("w_square", LINEAR_OPS | {"Mul", "Div"}, "w^2: relevance spread by the squared weights (passes an elementwise scale)")
def lrp_w_square(e, node, dy):
    """w^2 rule (Montavon et al. 2017): R_i = sum_j w_ij^2 / sum_i' w_i'j^2 R_j, independent of x; no bias.
    On a Mul / Div by a constant (an elementwise scale: a BatchNormalization that could not be folded)
    each output has one input, so relevance passes where the scale is not 0 (iNNvestigate's w^2 rule on
    a fused BatchNormalization layer)."""
    if node.op in ("Mul", "Div"):
        return _elementwise_w_square(e, node, dy)
    return basic(e, node, dy, "w_square", modify=lambda p, sign: p ** 2, bias=False, input_free=True)


def _elementwise_w_square(e, node, dy):
    live = [i for i, t in enumerate(node.inputs) if not isinstance(t, gs.Constant)]
    if len(live) != 1 or (node.op == "Div" and live != [0]):
        raise ValueError(f"the w^2 rule on {node.op} needs one computed operand and a constant (a scale), "
                         f"found {len(live)} computed operands")
    x, scale, y = node.inputs[live[0]], node.inputs[1 - live[0]], node.outputs[0]
    same = x.shape is not None and y.shape is not None and len(x.shape) == len(y.shape) and all(
        a == b or not isinstance(a, int) or not isinstance(b, int) for a, b in zip(x.shape, y.shape))
    if not same:  # the scale must not broadcast the operand to a larger output
        raise ValueError(f"the w^2 rule on {node.op} needs an output shaped like its computed operand (an "
                         f"elementwise scale), found {x.shape} and {y.shape}")
    out = [None] * len(node.inputs)
    if node.op == "Div" or bool((scale.values != 0).all()):
        out[live[0]] = dy
    else:  # w^2 / sum w^2 is 1 where the scale is not 0, and 0 (SafeDivide) where it is
        mask = np.broadcast_to(scale.values != 0, np.broadcast_shapes(scale.values.shape, (1,) * len(y.shape)))
        out[live[0]] = e.Mul(dy, e.const(np.ascontiguousarray(mask).astype(FLOAT)))
    return out


@register("flat", LINEAR_OPS, "flat: relevance spread evenly over the receptive field")
def lrp_flat(e, node, dy):
    """Flat rule: R_j spread evenly over the inputs in its receptive field; no bias."""
    return basic(e, node, dy, "flat", modify=lambda p, sign: np.ones_like(p), bias=False, input_free=True)


def _check_bounds(params: dict):
    low, high = (np.asarray(params[k], np.float64) for k in ("low", "high"))
    if low.shape != high.shape and low.ndim and high.ndim:
        raise ValueError(f"rule 'bounded' needs as many low as high values, got {low.size} and {high.size}")
    if not (low <= high).all():
        raise ValueError(f"rule 'bounded' needs low <= high, got low={params['low']}, high={params['high']}")


@register("bounded", LINEAR_OPS, "z^B: Deep Taylor for inputs bounded by low and high (per input channel or all)",
          params={"low": numbers(), "high": numbers(), "ignore_bias": flag(True)}, check=_check_bounds)
def lrp_bounded(e, node, dy, low, high, ignore_bias):
    """z^B (Montavon et al. 2017) for inputs in [low, high], each a float or one per input channel:
    z = x W - low W+ - high W- (no bias by default, as iNNvestigate's BoundedRule; zennit's ZBox cancels
    its bias terms the same way)."""
    return basic(e, node, dy, "bounded", bias=not ignore_bias, bounds=(low, high))


@register("pass", PASS_OPS | LINEAR_OPS, "relevance passes unchanged (activations; same-shape layers)")
def pass_through(e, node, dy):
    """Relevance passes unchanged (activations; Captum's IdentityRule on a layer that keeps its input's shape)."""
    if node.op in LINEAR:
        layer = Layer(node, "pass")
        xs, ys = layer.x.shape, node.outputs[0].shape
        if xs is None or ys is None or list(xs)[1:] != list(ys)[1:] or not all(isinstance(d, int) for d in list(xs)[1:]):
            raise ValueError(f"rule 'pass' needs an output shaped like the input, found input {xs} and output {ys}")
        return layer.result(dy)
    return [dy] + [None] * (len(node.inputs) - 1)

