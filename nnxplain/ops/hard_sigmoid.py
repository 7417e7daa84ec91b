"""HardSigmoid, max(0, min(1, alpha x + beta)): dy * alpha strictly inside the linear piece, 0 on the
flat pieces and at the corners (as torch's F.hardsigmoid).

The linear piece is read off the output, 0 < y < 1, so the gradient's mask is the forward's own.
Its own record, not its ONNX function body (Max(0, Min(1, alpha x + beta))): expanded, LRP would see
Max / Min selections and an Add whose constant beta absorbs a share of the relevance, not one
activation that relevance passes through. Its output lies in [0, 1]; it maps 0 to 0 only when
beta <= 0.
"""
from __future__ import annotations

from . import ALWAYS, op


def zero_when_beta_is(node) -> bool:
    return float(node.attrs.get("beta", 0.5)) <= 0


@op("HardSigmoid", "activation", pointwise=True, zero_preserving=zero_when_beta_is, nonnegative=ALWAYS)
def hard_sigmoid(e, node, dy):
    y = node.outputs[0]
    alpha = float(node.attrs.get("alpha", 0.2))
    inside = e.And(e.Greater(y, 0.0), e.Less(y, 1.0))
    return [e.Where(inside, e.Mul(dy, alpha), 0.0)]
