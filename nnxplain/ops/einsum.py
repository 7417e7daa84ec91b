"""Einsum of one or two operands, each index at most once per operand, no ellipsis (what attention
exports write: "bhid,bhjd->bhij", "bhij,bhjd->bhid", "bij,bjk->bik").

The gradient of an operand is itself an Einsum: of the output gradient with the other operand,
onto the operand's indices. An index that the operand alone has (summed in it, found in neither the
output nor the other operand) is absent from that Einsum; the gradient is the same along it, an
Unsqueeze and an Expand. Other equations are refused, naming the equation.

Category "nonlinear": with two computed operands the product is bilinear, and LRP methods refuse
the node until a rule names the op (an LRP view of an Einsum with one constant operand, a linear
layer, is a follow-up)."""
from __future__ import annotations

from . import op


def parse(equation: str) -> tuple[list[str], str]:
    """(the operands' indices, the output's), the output made explicit; ValueError where the
    equation is one this gradient does not cover."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    operands = lhs.split(",")
    refuse = f"Einsum equation '{equation}' is not supported (one or two operands, each index once per operand, " \
             f"no ellipsis)"
    if "." in equation or len(operands) > 2 or any(len(set(o)) != len(o) for o in operands + [rhs]):
        raise ValueError(refuse)
    if not arrow:  # implicit output: the indices that appear once, in alphabetical order
        letters = "".join(operands)
        rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    if not set(rhs) <= set("".join(operands)):
        raise ValueError(refuse)
    return operands, rhs


@op("Einsum", "nonlinear")
def einsum(e, node, dy):
    operands, rhs = parse(node.attrs["equation"])
    grads = []
    for k, (x, indices) in enumerate(zip(node.inputs, operands)):
        others = [(t, o) for j, (t, o) in enumerate(zip(node.inputs, operands)) if j != k]
        known = set(rhs).union(*(o for _, o in others))
        kept = "".join(c for c in indices if c in known)
        equation = ",".join([rhs] + [o for _, o in others]) + "->" + kept
        g = e.Einsum(dy, *(t for t, _ in others), equation=equation)
        alone = [i for i, c in enumerate(indices) if c not in known]
        if alone:  # summed in this operand only: the gradient is the same all along those axes
            g = e.Expand(e.Unsqueeze(g, e.ints(alone)), e.shape_of(x))
        grads.append(g)
    return grads
