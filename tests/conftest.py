"""Helpers the test modules share: the error yardstick, small model builders, and the op that stands
for "an op nnxplain does not support"."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper

from nnxplain.methods import available, load_method
from nnxplain.ops import RECORDS

ZOO_DIR = __import__("pathlib").Path(__file__).resolve().parent.parent / "models"


def relative_error(actual, expected) -> float:
    """max |actual - expected| / max |expected|: the float32-precision yardstick of these tests."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape}, expected {expected.shape}"
    if expected.size == 0:
        return 0.0
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30))


def tensor(name, shape=("N", 4), elem=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    """A graph input or output declaration (dims given as strings are dynamic)."""
    return helper.make_tensor_value_info(name, elem, None if shape is None else list(shape))


def model(nodes, inputs, outputs, inits=(), opset=17, ir_version=8) -> onnx.ModelProto:
    """A default-domain model from its nodes, value infos and initializers (numpy arrays by name, or
    TensorProtos)."""
    if isinstance(inits, dict):
        inits = [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)


def _unsupported_op() -> str:
    """A default-domain op that has no record in nnxplain/ops (so no gradient and no rule applies):
    the first, by name, of the float-to-float ops with one input and no required attribute that
    opset 17 defines. Derived rather than named, so that a new record moves it on to the next one
    (a custom-domain op would not do: models with one are refused when they are loaded, before any
    op is looked up)."""
    schemas = {s.name: s for s in onnx.defs.get_all_schemas_with_history()
               if s.domain == "" and s.since_version <= 17}
    for name in sorted(schemas):
        s = onnx.defs.get_schema(name, 17)
        types = {c.type_param_str: set(c.allowed_type_strs) for c in s.type_constraints}
        unary = s.min_input == s.max_input == 1 and s.min_output == s.max_output == 1
        floats = unary and "tensor(float)" in types.get(s.inputs[0].type_str, ()) \
            and s.inputs[0].type_str == s.outputs[0].type_str
        if floats and not s.deprecated and not any(a.required for a in s.attributes.values()) and name not in RECORDS:
            return name
    raise AssertionError("every unary float op has a record: tests need another unsupported op")


UNSUPPORTED_OP = _unsupported_op()


def lrp_methods() -> list[str]:
    """The LRP and Deep Taylor methods: the strict ones (a node no rule entry covers is an error, never
    a silent gradient)."""
    return [m for m in available() if load_method(m).strict]


SAMPLE_PARAMS = {"low": -4.0, "high": 4.0, "alpha": 2.0}  # values for the parameters methods need


def required_params(method: str) -> dict:
    """Values for the parameters `method` needs to be given: its required ones (input bounds) and
    those of its optional ones that have a sample value (lrp.alpha_beta needs alpha or beta)."""
    m = load_method(method)
    return {k: SAMPLE_PARAMS[k] for k in m.required + [k for k in m.optional if k in SAMPLE_PARAMS]}


@pytest.fixture
def rng():
    return np.random.default_rng(0)
