"""The iNNvestigate-style Python interface: create_analyzer(name, model, ...).analyze(X)."""
from __future__ import annotations

import os

import numpy as np

from .compiler import NEURON_INPUT, compile
from .errors import NnxplainError
from .runtime import check_feed, session, write_atomic


class Analyzer:
    """A compiled explainer for one method, run with ONNX Runtime."""

    def __init__(self, method: str, model, neuron_selection_mode: str = "max_activation", **params):
        self.method = method
        self.neuron_selection_mode = neuron_selection_mode
        self.model = compile(model, [method], neuron_selection=neuron_selection_mode, params=params)
        self.output_name = self.model.graph.output[-1].name
        self._session = None

    @property
    def session(self):
        if self._session is None:
            self._session = session(self.model)
        return self._session

    def analyze(self, X, neuron_selection=None) -> np.ndarray:
        """The explanation of X (numpy, batch first), shaped like X."""
        feeds = {}
        inputs = [m for m in self.session.get_inputs() if m.name != NEURON_INPUT]
        if len(inputs) != 1:
            raise NnxplainError(f"this model has {len(inputs)} inputs; run the compiled graph with a dict of inputs")
        x = check_feed(inputs[0], X)
        feeds[inputs[0].name] = x
        if self.neuron_selection_mode == "index":
            if neuron_selection is None:
                raise NnxplainError("neuron_selection_mode='index' needs analyze(X, neuron_selection=...)")
            neurons = np.broadcast_to(np.asarray(neuron_selection, dtype=np.int64), (x.shape[0],))
            feeds[NEURON_INPUT] = np.ascontiguousarray(neurons)
        elif neuron_selection is not None:
            raise NnxplainError(f"neuron_selection is only used with neuron_selection_mode='index' "
                                f"(this analyzer uses '{self.neuron_selection_mode}')")
        return self.session.run([self.output_name], feeds)[0]

    def save(self, path: str | os.PathLike):
        """Write the compiled explainer (a self-contained ONNX model)."""
        write_atomic(path, self.model.SerializeToString())


def create_analyzer(name: str, model, neuron_selection_mode: str = "max_activation", **params) -> Analyzer:
    """An analyzer for method `name` (see `nnxplain methods`) on an ONNX model (path or ModelProto)."""
    return Analyzer(name, model, neuron_selection_mode=neuron_selection_mode, **params)
