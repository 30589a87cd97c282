"""npgrad: NumPy/SciPy forward and backward functions as first-class PyTorch ops."""

from npgrad._executors import executor
from npgrad._layer import Layer
from npgrad._op import Op, get, op, ops
from npgrad._threads import num_threads, parallel_map
from npgrad.checking import CheckReport, check
from npgrad.errors import NpgradError
from npgrad.plugins import load_plugins

__version__ = "0.1.0"

__all__ = [
    "CheckReport",
    "Layer",
    "NpgradError",
    "Op",
    "__version__",
    "check",
    "executor",
    "get",
    "load_plugins",
    "num_threads",
    "op",
    "ops",
    "parallel_map",
]
