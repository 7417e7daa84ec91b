"""The iNNvestigate-style Python interface: create_analyzer(name, model, ...).analyze(X)."""
from __future__ import annotations

import os

import numpy as np

from .compiler import NEURON_INPUT, compile, neuron_feed, output_size, position_of, resolve_methods
from .errors import NnxplainError
from .patterns import Patterns, as_patterns, fit
from .sampling import NOISE_SUFFIX, noise_feeds
from .modelfile import save
from .runtime import check_feed, run, session, warn_nonfinite


class Analyzer:
    """A compiled explainer for one method, run with ONNX Runtime.

    Methods that need fitted patterns (pattern.net, pattern.attribution) compile once they have
    them: pass `patterns=` (a Patterns object or a patterns file), or call `fit(X)`. Methods of kind
    "perturbation" (occlusion, lime) compile nothing: `analyze` runs the model on perturbed copies.
    """

    def __init__(self, method: str, model, neuron_selection_mode: str = "max_activation", patterns=None,
                 wrt: str | None = None, per_dimension: bool = False, position: str | int | None = None,
                 **params):
        self.method = resolve_methods([method], params)[0]
        self.wrt, self.per_dimension = wrt, per_dimension  # what to explain (nnxplain.compile's)
        self.source = model
        self.neuron_selection_mode = neuron_selection_mode
        self.position = position  # for an output [batch, positions, scores]: see compiler.explained_position
        self.params = params
        # a Patterns object, or a patterns file: read when compiling, checked against the model's layers
        self.patterns: Patterns | str | os.PathLike | None = patterns
        self.model = None
        self._session = None
        self._scorer = None  # kind "perturbation": the model's scores (nnxplain.scores.Scorer), made when first used
        if self.method.kind == "perturbation":
            if neuron_selection_mode not in ("max_activation", "index"):
                raise NnxplainError(f"method '{self.method.name}' explains one output per sample (neuron_selection_mode "
                                    f"'max_activation' or 'index')")
            if position is not None:
                raise NnxplainError(f"method '{self.method.name}' explains outputs [batch, scores]; position is for "
                                    f"the compiled methods")
        elif "patterns" not in self.method.needs or self.patterns is not None:
            self._compile()

    def _compile(self):
        self.model = compile(self.source, [self.method], neuron_selection=self.neuron_selection_mode,
                             patterns=self.patterns, wrt=self.wrt, per_dimension=self.per_dimension,
                             position=self.position)
        outputs = [o.name for o in self.model.graph.output]
        per_dimension = [name for name in outputs if name.endswith("/per_dimension")]
        self.output_name = per_dimension[-1] if self.per_dimension and per_dimension else outputs[-1]
        self.explained = self.model.graph.output[0].name
        self._session = None

    def fit(self, X, batch_size: int = 256, progress: bool = True, pattern_type: str | None = None) -> "Analyzer":
        """Fit the patterns on X (an array, a .npy/.npz path or an iterable of batches), then compile.
        The estimator is the method's `pattern_type` parameter unless given here."""
        if "patterns" not in self.method.needs:
            raise NnxplainError(f"method '{self.method.name}' has nothing to fit")
        pattern_type = pattern_type or self.method.params.get("pattern_type", "relu")
        self.patterns = fit(self.source, X, pattern_type=pattern_type, batch_size=batch_size, progress=progress)
        self._compile()
        return self

    @property
    def session(self):
        if self.model is None:
            raise NnxplainError(f"method '{self.method.name}' needs fitted patterns: call analyzer.fit(X) first, "
                                f"or create the analyzer with patterns=FILE")
        if self._session is None:
            self._session = session(self.model)
        return self._session

    def __getstate__(self):  # picklable (to ship to workers): the session is made again where it is used
        return dict(self.__dict__, _session=None, _scorer=None)

    def analyze(self, X, neuron_selection=None, batch_index: int = 0) -> np.ndarray:
        """The explanation of X (numpy, batch first), shaped like X; X is a dict {input name: array} for
        a model with several inputs (a token model's ids, attention mask, ...), whose explanation is
        the relevance per token [batch, seq]. Sampling methods draw their noise
        from the method's `seed`: the same X gives the same explanation every time. `batch_index`:
        where X is batch k of a dataset, its noise comes from `batch_seed(seed, k)` (the first batch's
        from the seed itself), so a dataset explained batch by batch gets the same result on any engine."""
        from .data import batch_seed
        if self.method.kind == "perturbation":
            return self._perturbed(X, neuron_selection)
        inputs = [m for m in self.session.get_inputs() if m.name != NEURON_INPUT and not m.name.endswith(NOISE_SUFFIX)]
        feeds = model_feeds(inputs, X)
        x = feeds[self.explained_input()] if self.explained_input() in feeds else feeds[inputs[0].name]
        seed = batch_seed(self.method.params.get("seed", 0), batch_index)
        feeds.update(noise_feeds(self.session, x, {self.method.name: seed}))
        if self.neuron_selection_mode == "index":
            if neuron_selection is None:
                raise NnxplainError("neuron_selection_mode='index' needs analyze(X, neuron_selection=...)")
            feeds[NEURON_INPUT] = neuron_feed(neuron_selection, len(x), output_size(self.session, self.explained,
                                                                             position_of(self.model)))
        elif neuron_selection is not None:
            raise NnxplainError(f"neuron_selection is only used with neuron_selection_mode='index' "
                                f"(this analyzer uses '{self.neuron_selection_mode}')")
        for value in feeds.values():
            if value.dtype.kind == "f":
                warn_nonfinite(value)
        if len(x) == 0:  # nothing to explain; ONNX Runtime's NCHWc layout optimizer fails on an empty batch
            meta = next(o for o in self.session.get_outputs() if o.name == self.output_name)
            return np.zeros((0,) + tuple(d if isinstance(d, int) else x.shape[i] for i, d in enumerate(meta.shape)
                                         if i > 0), np.float32)
        return run(self.session, [self.output_name], feeds)[0]

    def explained_input(self) -> str:
        """The input whose shape the noise of a `<method>/noise` input follows: the explained float
        input, or the ids an explained embedding lookup reads."""
        import json
        props = {p.key: p.value for p in self.model.metadata_props}
        return json.loads(props.get("nnxplain.explained_inputs", "[null]"))[0]

    def _perturbed(self, X, neuron_selection) -> np.ndarray:
        from .perturbation import run as run_perturbation
        from .scores import Scorer
        if (neuron_selection is None) == (self.neuron_selection_mode == "index"):
            raise NnxplainError("neuron_selection_mode='index' needs analyze(X, neuron_selection=...), and only it takes one")
        if self._scorer is None:
            self._scorer = Scorer(self.source)
        x = np.asarray(X, np.float32)
        neurons = None if neuron_selection is None else neuron_feed(neuron_selection, len(x), None)
        warn_nonfinite(x)
        return run_perturbation(self.method, self.source, x, neuron=neurons, scorer=self._scorer)

    def save(self, path: str | os.PathLike, external_data: bool | None = None):
        """Write the compiled explainer: a self-contained ONNX model (fitted patterns baked in), its
        weights in `<path>.data` beside it when external_data is True or the model passes 2 GiB."""
        if self.method.kind == "perturbation":
            raise NnxplainError(f"method '{self.method.name}' runs the model on perturbed copies: it has no compiled "
                                f"graph to save")
        self.session  # noqa: B018 -- fails clearly when patterns are still missing
        save(self.model, path, external_data=external_data)

    def save_patterns(self, path: str | os.PathLike):
        """Write the fitted patterns (an npz that `patterns=` and `--patterns` read back)."""
        if self.patterns is None:
            raise NnxplainError("no patterns to save: call analyzer.fit(X) first")
        as_patterns(self.patterns).save(path)


def model_feeds(inputs, X) -> dict:
    """{input name: array} for the model's inputs (onnxruntime NodeArgs) from X: one array for a model
    with one input, else a dict naming every input (each checked against its declaration)."""
    if not isinstance(X, dict):
        if len(inputs) != 1:
            raise NnxplainError(f"this model has {len(inputs)} inputs ({', '.join(m.name for m in inputs)}): "
                                f"give X as a dict {{input name: array}}")
        return {inputs[0].name: check_feed(inputs[0], X)}
    missing = [m.name for m in inputs if m.name not in X]
    unknown = [k for k in X if k not in {m.name for m in inputs}]
    if missing or unknown:
        raise NnxplainError(f"the model's inputs are {', '.join(m.name for m in inputs)}; " +
                            (f"X lacks '{missing[0]}'" if missing else f"X has no input '{unknown[0]}'"))
    feeds = {m.name: check_feed(m, X[m.name]) for m in inputs}
    sizes = {len(v) if v.ndim else None for v in feeds.values()}
    if len(sizes) > 1:
        raise NnxplainError(f"the inputs' batch sizes differ: " + ", ".join(f"{k}: {len(v)}" for k, v in feeds.items()))
    return feeds


def create_analyzer(name: str, model, neuron_selection_mode: str = "max_activation", **params) -> Analyzer:
    """An analyzer for method `name` (see `nnxplain methods`) on an ONNX model (path or ModelProto).
    Keyword arguments set the method's parameters; `patterns=` passes fitted patterns, `position=`
    the explained position of an output [batch, positions, scores] ("last" or an index)."""
    return Analyzer(name, model, neuron_selection_mode=neuron_selection_mode, **params)
