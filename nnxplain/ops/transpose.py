"""Transpose: the gradient goes through the inverse permutation."""
from __future__ import annotations

import numpy as np

from ..emitter import shape
from . import IF_INPUT, op


@op("Transpose", "routing", nonnegative=IF_INPUT)
def transpose(e, node, dy):
    perm = node.attrs.get("perm") or list(reversed(range(len(shape(node.inputs[0])))))
    return [e.Transpose(dy, perm=[int(i) for i in np.argsort(perm)])]
