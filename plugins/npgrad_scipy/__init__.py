"""npgrad_scipy: SciPy functions as differentiable torch ops, written on npgrad's public API."""

from npgrad_scipy import integrate, linalg, ndimage, optimize, signal, sparse, special
from npgrad_scipy._demo import demo
from npgrad_scipy.conv import (
    Conv1d,
    Conv2d,
    Conv3d,
    ScipyConv2d,
    conv1d,
    conv2d,
    conv3d,
    convolve2d,
    correlate2d,
    correlate_channels,
    scipy_conv2d,
)

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ScipyConv2d",
    "conv1d",
    "conv2d",
    "conv3d",
    "convolve2d",
    "correlate2d",
    "correlate_channels",
    "demo",
    "integrate",
    "linalg",
    "ndimage",
    "optimize",
    "scipy_conv2d",
    "signal",
    "sparse",
    "special",
]
