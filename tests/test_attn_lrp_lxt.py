"""attn_lrp and cp_lrp on transformers equal LXT 2.1 (the reference implementation of AttnLRP) on the
same weights: BERT for sequence classification and a GPT-2 causal LM (per-token relevance at the word
embeddings) and torchvision's ViT (relevance at the pixels), the modern zoo's exports from both of
torch's exporters, within 1e-4 of the largest |LXT| value.

LXT runs in a process of its own (tests/lxt_oracle.py says exactly which LXT calls are the reference):
its efficient mode patches transformers' and torchvision's modules for the whole process. LXT is
installed into a cache folder with `pip install --no-deps lxt==2.1` (its declared dependencies
include bitsandbytes and open_clip, which its efficient mode does not import), once.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnxplain
from models import modern
from nnxplain.runtime import session

TOL = 1e-4
HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("NNXPLAIN_TEST_CACHE", Path.home() / ".cache" / "nnxplain-tests"))
MODELS = ["bert", "gpt2", "vit_torchvision"]
EXPORTERS = {"legacy": "", "dynamo": ".dynamo"}


@pytest.fixture(scope="module")
def lxt_path():
    target = CACHE / "lxt-2.1"
    if not (target / "lxt").exists():
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                               "lxt==2.1"], capture_output=True, text=True)
        assert done.returncode == 0, f"pip install lxt==2.1 failed: {done.stderr[-2000:]}"
    return target


@pytest.fixture(scope="module")
def lxt(lxt_path, tmp_path_factory):
    cache = {}

    def relevance(name, variant):
        if (name, variant) not in cache:
            out = tmp_path_factory.mktemp("lxt") / f"{name}_{variant}.npz"
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(lxt_path), os.environ.get("PYTHONPATH", "")])}
            done = subprocess.run([sys.executable, str(HERE / "lxt_oracle.py"), name, variant, str(out)],
                                  capture_output=True, text=True, env=env, timeout=600)
            assert done.returncode == 0, done.stderr[-3000:]
            cache[name, variant] = np.load(out)["relevance"]
        return cache[name, variant]
    return relevance


@pytest.mark.parametrize("variant", ["attn_lrp", "cp_lrp"])
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", MODELS)
def test_equals_lxt_on_the_same_weights(lxt, name, exporter, variant):
    expected = lxt(name, variant)
    explainer = nnxplain.compile(modern.MODERN_DIR / f"{name}{EXPORTERS[exporter]}.onnx", [variant])
    got = session(explainer).run([variant], modern.example_inputs(name))[0]
    assert got.shape == expected.shape
    error = np.abs(got - expected).max() / np.abs(expected).max()
    assert error < TOL, error
