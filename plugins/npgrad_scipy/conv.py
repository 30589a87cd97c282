"""2-D convolution ops on SciPy's signal module.

``scipy_conv2d`` is the op of PyTorch's tutorial "Creating extensions using numpy and scipy":
a "valid" cross-correlation of one image with a filter, plus a bias. Its gradients:

- input: the full convolution of the output gradient with the filter;
- filter: the valid cross-correlation of the input with the output gradient;
- bias: the output gradient, which npgrad sums down to the bias's (1, 1) shape.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.signal import convolve2d, correlate2d

import npgrad

Array = np.ndarray


@npgrad.op("scipy::scipy_conv2d")
def scipy_conv2d(input: Array, filter: Array, bias: Array) -> Array:
    """Cross-correlate a 2-D ``input`` with ``filter`` ("valid") and add ``bias``.

    Args:
        input: an (H, W) image.
        filter: a (kh, kw) filter.
        bias: a bias broadcast over the output, e.g. of shape (1, 1).

    >>> import torch
    >>> from npgrad_scipy import scipy_conv2d
    >>> scipy_conv2d(torch.ones(5, 5), torch.ones(2, 2), torch.zeros(1, 1)).shape
    torch.Size([4, 4])
    """
    return correlate2d(input, filter, mode="valid") + bias


@scipy_conv2d.backward
def _(grad: Array, input: Array, filter: Array, bias: Array) -> tuple[Array, Array, Array]:
    return convolve2d(grad, filter, mode="full"), correlate2d(input, grad, mode="valid"), grad


class ScipyConv2d(npgrad.Layer):
    """The tutorial's layer: a learnable filter and bias over one 2-D image.

    Args:
        filter_width: the filter's first dimension.
        filter_height: the filter's second dimension.

    >>> import torch
    >>> from npgrad_scipy import ScipyConv2d
    >>> ScipyConv2d(3, 3)(torch.randn(8, 8)).shape
    torch.Size([6, 6])
    """

    def __init__(self, filter_width: int, filter_height: int) -> None:
        super().__init__(
            scipy_conv2d,
            filter=torch.randn(filter_width, filter_height),
            bias=torch.randn(1, 1),
        )
