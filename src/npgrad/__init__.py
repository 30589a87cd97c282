"""npgrad: NumPy/SciPy forward and backward functions as first-class PyTorch ops."""

from npgrad._layer import Layer
from npgrad._op import Op, op
from npgrad._registry import get, ops
from npgrad.checking import CheckReport, check
from npgrad.errors import NpgradError

__version__ = "0.1.0"

__all__ = [
    "CheckReport",
    "Layer",
    "NpgradError",
    "Op",
    "__version__",
    "check",
    "get",
    "op",
    "ops",
]
