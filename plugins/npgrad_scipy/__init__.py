"""npgrad_scipy: SciPy functions as differentiable torch ops, written on npgrad's public API."""

from npgrad_scipy.conv import ScipyConv2d, scipy_conv2d

__all__ = ["ScipyConv2d", "scipy_conv2d"]
