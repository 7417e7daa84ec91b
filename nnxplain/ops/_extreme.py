"""What the gradients of Max and Min (elementwise) and ReduceMax and ReduceMin share: the gradient goes
to the elements equal to the result, split evenly among them where several tie (torch.maximum /
torch.minimum / torch.amax / torch.amin split a tie so)."""
from __future__ import annotations

import onnx

from ._reduce import _keepdims_grad as kept_axes
from ._reduce import _axes


def winners(e, x, y):
    """1.0 where x equals the extreme y (broadcast against x), 0.0 elsewhere."""
    return e.Cast(e.Equal(x, y), to=onnx.TensorProto.FLOAT)


def elementwise_extreme(e, node, dy):
    """The gradient of n-ary Max / Min (broadcasting): dy / (number of operands tied at y) to each
    operand where it equals y, reduced back to its shape."""
    y = node.outputs[0]
    if len(node.inputs) == 1:
        return [dy]
    masks = [winners(e, x, y) for x in node.inputs]
    share = e.Div(dy, e.add_all(masks))  # the count is >= 1 everywhere: y is one of the operands
    return [e.unbroadcast(e.Mul(share, m), x, y) for x, m in zip(node.inputs, masks)]


def reduced_extreme(e, node, dy):
    """The gradient of ReduceMax / ReduceMin: dy / (number of elements tied at the extreme) to each
    element equal to its slice's extreme."""
    kept = kept_axes(e, node, dy)
    if kept is None:  # noop_with_empty_axes: the identity
        return [dy] + [None] * (len(node.inputs) - 1)
    x = node.inputs[0]
    mask = winners(e, x, kept_axes(e, node, node.outputs[0]))
    axes = _axes(node)
    count = e.ReduceSum(mask, e.ints(axes), keepdims=1) if axes else e.ReduceSum(mask, keepdims=1)
    return [e.Mul(mask, e.Div(kept, count))] + [None] * (len(node.inputs) - 1)
