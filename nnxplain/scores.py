"""The model's scores, batched through ONNX Runtime: what the perturbation methods (occlusion, LIME)
and the perturbation analysis (evaluate) run the model for."""
from __future__ import annotations

import numpy as np


class Scorer:
    """The model's first output, batched through ONNX Runtime: [N, scores], flattened per sample, or
    for an output [batch, positions, scores] with `position` given, that position's scores."""

    def __init__(self, model, batch_size: int = 512, threads: int = 0, position: int | None = None):
        from .canonicalize import canonicalize
        from .load import load
        from .runtime import session
        self.session = session(canonicalize(load(model)), threads=threads)  # Softmax removed: the scores, as explained
        self.inputs = self.session.get_inputs()
        self.input = self.inputs[0].name
        self.batch_size = batch_size
        self.position = position

    def __call__(self, x) -> np.ndarray:
        """The scores of x: an array (the first input), or {input name: array} for every input."""
        from .runtime import run
        feeds = x if isinstance(x, dict) else {self.input: x}
        n = len(next(iter(feeds.values())))
        outs = [run(self.session, None, {k: v[i:i + self.batch_size] for k, v in feeds.items()})[0]
                for i in range(0, max(n, 1), self.batch_size)]  # an empty batch runs once, empty
        scores = np.concatenate(outs)
        if self.position is not None:
            scores = scores[:, self.position]
        return scores.reshape(n, int(np.prod(scores.shape[1:], dtype=np.int64)))
