"""Resize in modes nearest (every nearest_mode) and linear, with scales or sizes given as constants
(or sizes computed from x's own dims and constants, as torch exports F.interpolate(size=...) on a
dynamic batch), on axes of static size: every coordinate_transformation_mode but tf_crop_and_resize.

Both modes are linear in x and separable: along each resized axis the output is A @ x for an
[out, in] interpolation matrix A (a 0/1 selection for nearest, two taps summing to 1 for linear),
and the whole op is those products one axis after the other. The gradient applies A^T along each
axis (a MatMul). A is computed when the graph is compiled by running the op itself, with ONNX
Runtime, on an identity matrix laid out along that axis (the other axes keep their size and
scale 1, which every such mode maps onto itself), so the matrix is ONNX Runtime's own rounding and
clamping, whatever the mode.

Category "proportional", as AveragePool: the output is a sum of its input's contributions with
fixed nonnegative weights, so the LRP z-rule applies through this gradient. It has no weight
input, so it is no linear_op (LinearLayer's weight is a node input).
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx import helper

from ..emitter import FLOAT, shape
from . import IF_INPUT, op

MODES = ("nearest", "linear")


def _constant(node, i):
    """Input i's values, None where it is absent; an error where it is computed."""
    t = node.inputs[i] if len(node.inputs) > i else None
    if t is None or not t.name:
        return None
    if not isinstance(t, gs.Constant):
        if i == 3 and _sizes_from_shapes(node) is not None:
            return _sizes_from_shapes(node)
        raise ValueError(f"Resize with {['', 'roi', 'scales', 'sizes'][i]} computed at run time is not supported "
                         f"(sizes are where they are x's own dims and constants)")
    return t.values


def _sizes_from_shapes(node):
    """Sizes computed at run time from x's own dims and constants, as torch exports
    F.interpolate(size=...) on a dynamic batch (Concat of Slice(Shape(x)) and a constant): the
    sizes, x's dim itself (a symbol, maybe) where they copy it, or None where they are not that."""
    x = node.inputs[0]
    dims = shape(x)

    def sizes_of(t):
        if isinstance(t, gs.Constant):
            return [int(v) for v in t.values.reshape(-1)]
        source = t.inputs[0] if len(t.inputs) == 1 else None
        if source is None or dims is None:
            return None
        if source.op == "Concat" and source.attrs.get("axis") in (0, -1):
            pieces = [sizes_of(p) for p in source.inputs]
            return None if None in pieces else [d for p in pieces for d in p]
        if source.op == "Shape" and source.inputs[0] is x:
            return list(dims[source.attrs.get("start", 0):source.attrs.get("end", len(dims))])
        if source.op == "Slice":
            whole, bounds = sizes_of(source.inputs[0]), source.inputs[1:]
            if whole is None or not all(isinstance(b, gs.Constant) and b.values.size == 1 for b in bounds):
                return None
            start, end, *axis_and_step = (int(b.values.reshape(-1)[0]) for b in bounds)
            if axis_and_step not in ([], [0], [-1], [0, 1], [-1, 1]):  # along its one axis, step 1
                return None
            return whole[start:end]  # Python's slice clamps as ONNX's does for step 1
        return None

    sizes = sizes_of(node.inputs[3])
    return None if sizes is None or len(sizes) != len(dims or []) else np.array(sizes, dtype=object)


def check(node, x_dims):
    """Why the node's Resize has no gradient here, as a ValueError; else (scales, sizes), one given."""
    attrs = node.attrs
    mode = attrs.get("mode", "nearest")
    if mode not in MODES:
        raise ValueError(f"Resize mode '{mode}' is not supported (only {' and '.join(MODES)})")
    if attrs.get("antialias", 0):
        raise ValueError("Resize with antialias=1 is not supported")
    if attrs.get("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        raise ValueError("Resize with coordinate_transformation_mode tf_crop_and_resize is not supported")
    if "axes" in attrs or attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise ValueError("Resize with axes or keep_aspect_ratio_policy is not supported")
    scales, sizes = _constant(node, 2), _constant(node, 3)
    if scales is not None and scales.size == 0:
        scales = None
    return scales, sizes


def axis_matrix(node, axis: int, n: int, opset: int, scales, sizes) -> np.ndarray | None:
    """A [out, n] of the node's Resize along `axis` (of size n), or None where it is the identity."""
    rank = len(scales if scales is not None else sizes)
    other = 1 if axis == 0 else 0                 # the axis that carries the identity's rows
    dims = [1] * rank
    dims[axis] = dims[other] = n
    eye = np.eye(n, dtype=np.float32).reshape(dims)
    inputs = {"x": eye}
    if scales is not None:
        one_axis = np.ones(rank, np.float32)
        one_axis[axis] = scales[axis]
        inputs["scales"] = one_axis
    else:
        one_axis = np.array(dims, np.int64)
        one_axis[axis] = sizes[axis]
        inputs["sizes"] = one_axis
    names = ["x", "", "scales" if scales is not None else "", "sizes" if sizes is not None else ""]
    resize = helper.make_node("Resize", names[:4 if sizes is not None else 3], ["y"], **node.attrs)
    graph = helper.make_graph(
        [resize], "axis_matrix", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(v, k) for k, v in inputs.items() if k != "x"])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    y = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, {"x": eye})[0]
    a = np.moveaxis(y, (other, axis), (0, 1)).reshape(n, -1).T     # [out, n]
    return None if a.shape == (n, n) and np.array_equal(a, np.eye(n)) else a


@op("Resize", "proportional", nonnegative=IF_INPUT, zero_preserving=True)
def resize(e, node, dy):
    x = node.inputs[0]
    dims = shape(x)
    scales, sizes = check(node, dims)
    g = dy
    rank = len(dims)
    for axis in range(rank):
        unchanged = (scales is not None and scales[axis] == 1) or (sizes is not None and sizes[axis] == dims[axis])
        if unchanged:
            continue
        if not isinstance(dims[axis], (int, np.integer)):
            raise ValueError(f"Resize along axis {axis} of unknown size")
        a = axis_matrix(node, axis, int(dims[axis]), e.graph.opset, scales, sizes)
        if a is not None:
            g = along(e, g, axis, rank, a.astype(FLOAT))
    return [g] + [None] * (len(node.inputs) - 1)


def along(e, g, axis: int, rank: int, a: np.ndarray):
    """g with A^T applied along `axis` (g's size there: A's rows)."""
    if axis == rank - 1:
        return e.MatMul(g, e.const(a))
    if axis == rank - 2:
        return e.MatMul(e.const(np.ascontiguousarray(a.T)), g)
    perm = [*range(axis), *range(axis + 1, rank), axis]   # the axis moved last, and back
    back = [*range(axis), rank - 1, *range(axis, rank - 1)]
    return e.Transpose(e.MatMul(e.Transpose(g, perm=perm), e.const(a)), perm=back)
