"""One view of a linear layer's weights (Conv of any rank, ConvTranspose, Gemm, MatMul with a constant weight), shared
by the LRP rules and PatternNet: where the weight and bias are among the node's inputs, how Gemm's
alpha, beta and transB change what they mean, and the weight as [K, D] rows (one per output neuron,
what multiplies an input patch) and back."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .ops import LINEAR


# Linear ops whose weight this view has no rows of (one per output neuron): PatternNet and
# BatchNormalization folding leave them out; the LRP rules, which modify the weight elementwise and run
# the op's own forward and transpose, need no rows.
NO_ROWS = {"ConvTranspose": "PatternNet has no rows (one per output neuron) of ConvTranspose's weight "
                            "([C_in, C_out / group, *kernel]) yet"}
CHANNELS_FIRST = ("Conv", "ConvTranspose")  # activations [N, C, ...], a bias per channel


class LinearLayer:
    """A node with a linear adapter and a constant weight. `weight` and `bias` are float64 copies of
    the stored values (bias None where there is none); `alpha` and `beta` are the scales the forward
    applies to them (Gemm's attributes; 1 for the other ops)."""

    def __init__(self, node: gs.Node):
        lin = LINEAR[node.op](node) if node.op in LINEAR else None
        if lin is None or not isinstance(node.inputs[lin.weight], gs.Constant):
            raise ValueError(f"node '{node.name}' (op {node.op}) is no linear layer with a constant weight")
        self.node, self.lin = node, lin
        self.x = node.inputs[lin.x]
        self.weight = np.asarray(node.inputs[lin.weight].values, np.float64)
        b = node.inputs[lin.bias] if lin.bias is not None and lin.bias < len(node.inputs) else None
        self.bias_tensor = b if b is not None and b.name else None
        self.bias = (np.asarray(b.values, np.float64) if isinstance(self.bias_tensor, gs.Constant) else None)
        gemm = node.op == "Gemm"
        self.alpha = float(node.attrs.get("alpha", 1.0)) if gemm else 1.0
        self.beta = float(node.attrs.get("beta", 1.0)) if gemm else 1.0
        self.trans_b = bool(gemm and node.attrs.get("transB", 0))
        self.groups = int(node.attrs.get("group", 1)) if node.op in CHANNELS_FIRST else 1

    @staticmethod
    def of(node: gs.Node) -> "LinearLayer | None":
        """The node's view, or None where it is no linear layer with a constant weight."""
        try:
            return LinearLayer(node)
        except ValueError:
            return None

    def out_in_layout(self) -> bool:
        """Whether the weight is stored [out, in, ...] (Conv, Gemm with transB) or [in, out] (Gemm, MatMul)."""
        return self.node.op == "Conv" or self.trans_b

    def input_channels(self) -> int:
        """The channels (features) of the activation input the weight reads."""
        if self.node.op == "Conv":
            return self.weight.shape[1] * self.groups
        if self.node.op == "ConvTranspose":  # [C_in, C_out / group, *kernel]
            return self.weight.shape[0]
        return self.weight.shape[1] if self.out_in_layout() else self.weight.shape[0]

    def rows(self) -> np.ndarray:
        """[K, D]: w_k, what multiplies an input patch for output neuron k (Gemm's alpha included)."""
        if self.node.op in NO_ROWS:
            raise ValueError(f"node '{self.node.name}' ({self.node.op}): {NO_ROWS[self.node.op]}")
        if self.node.op == "Conv":
            return self.weight.reshape(self.weight.shape[0], -1)
        return (self.weight if self.trans_b else self.weight.T) * self.alpha

    def from_rows(self, rows: np.ndarray) -> np.ndarray:
        """[K, D] rows -> the weight's stored layout, so the op's forward or transpose can take them."""
        if self.node.op == "Conv":
            return rows.reshape(self.weight.shape)
        return (rows if self.trans_b else rows.T) / self.alpha  # the op multiplies by alpha again
