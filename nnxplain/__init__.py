"""nnxplain: compiles ONNX models into ONNX explainers (gradient, guided backprop, LRP, PatternNet, ...)."""
from .analyzer import Analyzer, create_analyzer
from .compiler import compile
from .engine import read_explanations
from .errors import NnxplainError, NnxplainWarning, UnsupportedError
from .methods import available as methods

__all__ = ["Analyzer", "NnxplainError", "NnxplainWarning", "UnsupportedError", "compile", "create_analyzer", "methods",
           "read_explanations"]
from ._version import __version__  # noqa: E402
