"""`nnxplain support` answers for every method what compiling that method alone answers, from one
preparation of the model (nnxplain.support.each_method_support)."""
from __future__ import annotations

import onnx
import pytest

import nnxplain
from nnxplain.errors import NnxplainError
from nnxplain.load import load
from nnxplain.methods import available, load_method
from nnxplain.support import each_method_support, stand_in_patterns
from models import archs


def compiled_alone(model: onnx.ModelProto, method) -> tuple[bool, str]:
    stand_ins = {**{k: 0.0 for k in method.required}, **{k: 1.0 for k in method.optional[:1]}}
    patterns = stand_in_patterns(model) if "patterns" in method.needs else None
    try:
        nnxplain.compile(model, [method], params=stand_ins, patterns=patterns)
    except NnxplainError as exc:
        return False, str(exc)
    return True, ""


@pytest.mark.parametrize("arch", ["squeeze_excite", "mobilenetv2"])
def test_each_method_gets_the_verdict_of_compiling_it_alone(arch):
    model = load(str(archs.path(arch)))
    methods = [load_method(m) for m in available()]
    answers = list(each_method_support(model, methods))
    assert [m.name for m, _, _ in answers] == [m.name for m in methods]
    verdicts = {m.name: (ok, note) for m, ok, note in answers}
    for method in methods:
        if method.kind == "perturbation":  # occlusion, LIME: run on perturbed inputs, never compiled
            assert verdicts[method.name] == (True, "analyze and evaluate: no compiled graph"), method.name
            continue
        ok, note = compiled_alone(model, method)
        assert verdicts[method.name][0] == ok, method.name
        if not ok:
            assert verdicts[method.name][1] == note, method.name
    assert any(ok for ok, _ in verdicts.values())
    if arch == "squeeze_excite":  # its gate refuses the LRP family: both sides must have said so
        assert not all(ok for ok, _ in verdicts.values())


def test_a_model_that_does_not_load_fails_every_method_with_its_reason(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a model")
    methods = [load_method("gradient"), load_method("lrp.epsilon")]
    answers = list(each_method_support(str(path), methods))
    assert [m.name for m, _, _ in answers] == ["gradient", "lrp.epsilon"]
    assert all(not ok and "broken.onnx: not a readable ONNX model" in note for _, ok, note in answers)
