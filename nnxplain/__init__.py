"""nnxplain: compiles ONNX models into ONNX explainers (gradient, guided backprop, LRP, PatternNet, ...)."""
from .analyzer import Analyzer, create_analyzer
from .compiler import compile
from .errors import NnxplainError, UnsupportedError
from .methods import available as methods

__all__ = ["Analyzer", "NnxplainError", "UnsupportedError", "compile", "create_analyzer", "methods"]
from ._version import __version__  # noqa: E402
