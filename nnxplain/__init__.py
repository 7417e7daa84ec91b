"""nnxplain: compiles ONNX models into ONNX explainers (gradient, guided backprop, LRP, PatternNet, ...)."""
from .analyzer import Analyzer, create_analyzer
from .compiler import compile
from .errors import NnxplainError, NnxplainWarning, UnsupportedError
from .methods import available as methods

__all__ = ["Analyzer", "NnxplainError", "NnxplainWarning", "UnsupportedError", "compile", "create_analyzer", "methods"]
__version__ = "0.1.0"
