"""The modern zoo (models/modern.py): every committed export of every architecture runs in ONNX
Runtime and equals its torch module, rebuilt from the seed, to 1e-5 of the largest logit."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models import modern

EXPORTS = [(name, suffix) for name in modern.BUILDERS for suffix in ("", ".dynamo")]


@pytest.fixture(scope="module")
def torch_logits():
    cache = {}

    def logits(name):
        if name not in cache:
            inputs = modern.example_inputs(name)
            with torch.no_grad():
                cache[name] = modern.build(name)(*(torch.from_numpy(v) for v in inputs.values())).numpy()
        return cache[name]
    return logits


@pytest.mark.parametrize("name,suffix", EXPORTS, ids=[f"{n}{s}" for n, s in EXPORTS])
def test_each_export_equals_its_torch_module(name, suffix, torch_logits):
    path = modern.MODERN_DIR / f"{name}{suffix}.onnx"
    assert path.exists(), f"{path.name} is missing: run python -m models.modern {name}"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = modern.example_inputs(name)
    got = session.run(["logits"], {i.name: inputs[i.name] for i in session.get_inputs()})[0]
    want = torch_logits(name)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_text_models_take_token_ids_and_a_dynamic_sequence():
    for name in modern.TEXT:
        session = ort.InferenceSession(str(modern.MODERN_DIR / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        inputs = session.get_inputs()
        assert {i.type for i in inputs} == {"tensor(int64)"}
        assert all(isinstance(i.shape[0], str) and isinstance(i.shape[1], str) for i in inputs)
        shorter = {k: v[:, :5] for k, v in modern.example_inputs(name).items()}
        logits = session.run(["logits"], {i.name: shorter[i.name] for i in inputs})[0]
        assert logits.shape[0] == 2 and (logits.shape[1] == 5 if name == "gpt2" else logits.ndim == 2)


def test_the_causal_mask_built_for_export_is_transformers_own():
    """GPT-2's wrapper builds the 4-D additive causal + padding mask itself (transformers builds it
    with vmap, which the legacy exporter cannot trace): at every attended position the logits are
    those of transformers' own masking."""
    model = modern.build("gpt2")
    inputs = {k: torch.from_numpy(v) for k, v in modern.example_inputs("gpt2").items()}
    with torch.no_grad():
        ours = model(inputs["input_ids"], inputs["attention_mask"])
        theirs = model.model(**inputs).logits
    attended = inputs["attention_mask"].bool()
    assert torch.equal(ours[attended], theirs[attended])
