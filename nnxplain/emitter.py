"""Writes new ONNX nodes into a graphsurgeon graph, with one name generator for all of them.

`e.Mul(a, b)` appends a Mul node and returns its output; numpy arrays and Python floats become
constants. Nodes are appended directly (never through graph.layer(), which rescans every tensor).

Names say what a node serves: inside `with e.scope("lrp.epsilon", "conv1", "epsilon"):` every new
node and tensor is named `lrp.epsilon/conv1/epsilon/<Op>_<n>` (the compiler opens the method's
scope, the backward driver the model node's and the rule's), so a viewer such as Netron groups the
explainer by method, model node and rule. Outside any scope names start with the emitter's prefix.
The counter keeps every name unique.
"""
from __future__ import annotations

import contextlib
import itertools

import numpy as np
import onnx_graphsurgeon as gs

FLOAT = np.float32


class Emitter:
    def __init__(self, graph: gs.Graph, prefix: str = "nnx"):
        self.graph = graph
        self.prefix = prefix
        self._ids = itertools.count()
        self._taken = set(graph.tensors().keys())
        self._shapes: dict[str, gs.Variable] = {}
        self._scopes: list[str] = []
        self._path = prefix

    @contextlib.contextmanager
    def scope(self, *names: str):
        """Name what is emitted inside `<outer scopes>/<names joined by />/...`."""
        saved = len(self._scopes)
        self._scopes.extend(name.strip("/") or "_" for name in names)
        self._path = "/".join(self._scopes)
        try:
            yield
        finally:
            del self._scopes[saved:]
            self._path = "/".join(self._scopes) or self.prefix

    def fresh(self, hint: str) -> str:
        while True:
            name = f"{self._path}/{hint}_{next(self._ids)}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def claim(self, name: str, fallback_suffix: str) -> str:
        """Reserve `name` for a new tensor, or `name + fallback_suffix` if the model already uses it."""
        if name in self._taken:
            name += fallback_suffix
        self._taken.add(name)
        return name

    def op(self, op_type: str, *inputs, outputs: int = 1, **attrs):
        """Append one node; return its output (or the list of its outputs when outputs > 1)."""
        ins = [self.tensor(i) for i in inputs]
        outs = [gs.Variable(self.fresh(op_type)) for _ in range(outputs)]
        # tensor-valued attributes (ConstantOfShape's value) must be Constants to export as tensors
        attrs = {k: gs.Constant(self.fresh(k), v) if isinstance(v, np.ndarray) else v
                 for k, v in attrs.items() if v is not None}
        self.graph.nodes.append(gs.Node(op_type, self.fresh(op_type + "_node"), attrs, ins, outs))
        return outs[0] if outputs == 1 else outs

    def __getattr__(self, op_type: str):
        if op_type[:1].isupper():
            return lambda *inputs, **attrs: self.op(op_type, *inputs, **attrs)
        raise AttributeError(op_type)

    def tensor(self, value) -> gs.Tensor:
        if isinstance(value, gs.Tensor):
            return value
        if value is None:
            return gs.Variable.empty()
        if isinstance(value, float):
            value = np.array(value, FLOAT)
        return self.const(value)

    def const(self, value, dtype=None) -> gs.Constant:
        array = np.asarray(value, dtype=dtype)
        if not array.flags.c_contiguous:  # (np.ascontiguousarray would turn a 0-D scalar into 1-D)
            array = np.ascontiguousarray(array)
        return gs.Constant(self.fresh("const"), array)

    def ints(self, values) -> gs.Constant:
        return self.const(np.asarray(values, np.int64).reshape(-1))

    # --- shapes -------------------------------------------------------------------------------
    def shape_of(self, t: gs.Tensor) -> gs.Tensor:
        """The runtime shape of t as an int64 vector (a constant where t's shape is fully static)."""
        static = static_shape(t)
        if static is not None:
            return self.ints(static)
        if t.name not in self._shapes:
            self._shapes[t.name] = self.Shape(t)
        return self._shapes[t.name]

    def reshape_like(self, g: gs.Tensor, like: gs.Tensor, g_dims: list | None = None) -> gs.Tensor:
        """g reshaped to like's shape. `g_dims`: g's dims where the forward graph knows them (ints,
        symbols, None). Where like's symbolic dims stand at the same places in g (the batch), the
        target is a constant with 0 there (Reshape copies that dim from g) rather than the run-time
        Shape(like): ONNX Runtime infers the result's shape from the constant, and a backward pass
        of unknown shapes loads in time quadratic in its depth (README: Scale)."""
        target = _inferable_target(like, g_dims, 0)
        return self.Reshape(g, self.shape_of(like) if target is None else self.ints(target))

    def expand_like(self, g: gs.Tensor, like: gs.Tensor, g_dims: list | None = None) -> gs.Tensor:
        """g broadcast to like's shape; a constant target (1 where g has like's symbolic dim already)
        where g_dims allows it, as in reshape_like."""
        target = _inferable_target(like, g_dims, 1)
        return self.Expand(g, self.shape_of(like) if target is None else self.ints(target))

    def zeros_like(self, like: gs.Tensor) -> gs.Tensor:
        return self.ConstantOfShape(self.shape_of(like), value=np.zeros(1, FLOAT))

    def add_all(self, terms: list[gs.Tensor]) -> gs.Tensor:
        """Sum of relevance arriving at one tensor from several consumers (fan-out)."""
        total = terms[0]
        for term in terms[1:]:
            total = self.Add(total, term)
        return total

    def unbroadcast(self, g: gs.Tensor, x: gs.Tensor, y: gs.Tensor | list) -> gs.Tensor:
        """Reduce g, shaped like the broadcast result y (a tensor or its dims), back to operand x's shape."""
        xs, ys = shape(x), (y if isinstance(y, list) else shape(y))
        if xs is None or ys is None:
            raise ValueError(f"the shape of '{x.name}' or of its broadcast result is unknown")
        lead = len(ys) - len(xs)
        axes = list(range(lead)) + [lead + i for i, d in enumerate(xs) if d == 1 and ys[lead + i] != 1]
        if axes:
            g = self.ReduceSum(g, self.ints(axes), keepdims=1)  # x's shape, after `lead` axes of 1
        if lead:  # Squeeze rather than a Reshape to Shape(x): the result's shape stays inferable
            g = self.Squeeze(g, self.ints(list(range(lead))))
        return g


def _inferable_target(like: gs.Tensor, g_dims: list | None, keep: int) -> list[int] | None:
    """like's dims as a constant shape, `keep` (Reshape's 0, Expand's 1: take g's dim) standing for each
    symbolic dim that g has at the same place; None where some dim is neither static nor so kept."""
    dims = shape(like)
    if g_dims is None or dims is None or (keep == 1 and len(g_dims) != len(dims)):
        return None
    target = []
    for i, d in enumerate(dims):
        if isinstance(d, (int, np.integer)) and d > 0:
            target.append(int(d))
        elif isinstance(d, str) and i < len(g_dims) and g_dims[i] == d:
            target.append(keep)
        else:
            return None
    return target


def shape(t: gs.Tensor) -> list | None:
    """t's shape as a list whose entries are ints or symbolic names/None, or None if unknown."""
    if isinstance(t, gs.Constant):
        return list(t.values.shape)
    return None if t.shape is None else list(t.shape)


def static_shape(t: gs.Tensor) -> list[int] | None:
    dims = shape(t)
    if dims is None or not all(isinstance(d, (int, np.integer)) and d >= 0 for d in dims):
        return None
    return [int(d) for d in dims]


def static_dims(t: gs.Tensor, what: str, start: int = 0) -> list[int]:
    """The dims of t from `start` on, which must be known when the graph is compiled."""
    dims = shape(t)
    tail = None if dims is None else dims[start:]
    if tail is None or not all(isinstance(d, (int, np.integer)) for d in tail):
        raise ValueError(f"{what} needs static dims {start}.. of '{t.name}', found {dims}")
    return [int(d) for d in tail]
