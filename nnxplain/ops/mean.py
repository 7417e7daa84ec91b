"""Mean (elementwise, n-ary, broadcasting): each operand's gradient is dy / n reduced back to its shape.

Category "proportional": the output is the sum of its inputs' contributions x_i / n, and the z-rule
shares relevance in proportion to them.
"""
from __future__ import annotations

from . import IF_INPUTS, op


@op("Mean", "proportional", nonnegative=IF_INPUTS)
def mean(e, node, dy):
    y = node.outputs[0]
    share = e.Div(dy, float(len(node.inputs)))
    return [e.unbroadcast(share, x, y) for x in node.inputs]
