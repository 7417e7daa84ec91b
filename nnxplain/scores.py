"""The model's scores, batched through ONNX Runtime: what the perturbation methods (occlusion, LIME)
and the perturbation analysis (evaluate) run the model for."""
from __future__ import annotations

import numpy as np


class Scorer:
    """The model's first output, batched through ONNX Runtime."""

    def __init__(self, model, batch_size: int = 512, threads: int = 0):
        from .canonicalize import canonicalize
        from .load import load
        from .runtime import session
        self.session = session(canonicalize(load(model)), threads=threads)  # Softmax removed: the scores, as explained
        self.input = self.session.get_inputs()[0].name
        self.batch_size = batch_size

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from .runtime import run
        outs = [run(self.session, None, {self.input: x[i:i + self.batch_size]})[0]
                for i in range(0, max(len(x), 1), self.batch_size)]  # an empty batch runs once, empty
        scores = np.concatenate(outs)
        return scores.reshape(len(x), int(np.prod(scores.shape[1:], dtype=np.int64)))
