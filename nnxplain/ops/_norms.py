"""What the gradients of the nonlinear reductions (ReduceL2, ReduceSumSquare, ReduceLogSumExp) share:
the gradient, with the reduced axes kept, times a local slope shaped like the input."""
from __future__ import annotations

from ._reduce import _keepdims_grad


def nonlinear_reduction(slope):
    """The gradient of a reduction whose input's gradient is dy * slope(e, x, y), with dy and the
    output y broadcast back over the reduced axes."""
    def vjp(e, node, dy):
        kept = _keepdims_grad(e, node, dy)
        if kept is None:  # the ONNX spec and its reference implementation disagree on what this computes
            raise ValueError(f"{node.op} with noop_with_empty_axes=1 and no axes is not supported")
        y = _keepdims_grad(e, node, node.outputs[0])
        return [e.Mul(kept, slope(e, node.inputs[0], y))] + [None] * (len(node.inputs) - 1)
    return vjp
