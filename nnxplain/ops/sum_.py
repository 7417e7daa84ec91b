"""Sum (elementwise, n-ary, broadcasting): each operand's gradient is dy reduced back to its shape.

Category "proportional", as Add: the output is the sum of its inputs' contributions, and the z-rule
shares relevance in proportion to them (a constant operand absorbs its share, as a bias does).
"""
from __future__ import annotations

from . import IF_INPUTS, op


@op("Sum", "proportional", nonnegative=IF_INPUTS, groups=("add",))
def sum_(e, node, dy):
    y = node.outputs[0]
    return [e.unbroadcast(dy, x, y) for x in node.inputs]
