"""2-D convolution and correlation ops on NumPy and SciPy, differentiable to any order.

Ops (each registered as ``scipy::<name>``):

- ``correlate2d(x, w)`` and ``convolve2d(x, w)``: over the last two dims of ``x`` (any leading
  batch dims) with one 2-D kernel; modes "valid", "same" and "full" equal to
  ``scipy.signal.correlate2d`` / ``convolve2d``, even kernels included.
- ``conv2d(input, weight, bias=None)``: (N, C_in, H, W) x (C_out, C_in, kh, kw) -> (N, C_out, H',
  W'), a true convolution (the kernel flipped, as in ``scipy.signal.convolve2d``) summed over input
  channels.
- ``correlate_channels(x, w, padding=...)``: the primitive the others reduce to: a valid
  correlation of the zero-padded ``x`` (B, C, H, W) with ``w`` (O, C, kh, kw), summed over C.
- ``scipy_conv2d(input, filter, bias)``: the op of PyTorch's tutorial "Creating extensions using
  numpy and scipy", with the tutorial's NumPy backward.

``method`` is "direct" (sliding windows and BLAS), "fft" (``scipy.fft``) or "auto", which picks
the faster for each call from the sizes. Gradients: for ``y = correlate_channels(x, w)`` with
padding (t, b, l, r),

- ``dL/dx = correlate_channels(dL/dy, flip(w) with in/out channels swapped,
  padding=(kh-1-t, kh-1-b, kw-1-l, kw-1-r))``: a full convolution, cropped;
- ``dL/dw = correlate_channels(x with batch and channels swapped, dL/dy likewise, padding)``: a
  valid correlation of the input with the output gradient.

Both are ``correlate_channels`` again, so every op here is differentiable to any order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.signal import convolve2d as _scipy_convolve2d
from scipy.signal import correlate2d as _scipy_correlate2d
from torch import nn

import npgrad
from npgrad.errors import InputError
from npgrad_scipy._correlate import METHODS, correlate
from npgrad_scipy._correlate import pad as _pad

Array = np.ndarray[Any, Any]
Padding = tuple[int, int, int, int]
MODES = ("valid", "same", "full")


# --- the primitive -------------------------------------------------------------------------


@npgrad.op("scipy::correlate_channels")
def correlate_channels(
    x: Array, w: Array, *, padding: Padding = (0, 0, 0, 0), method: str = "auto"
) -> Array:
    """Correlate the zero-padded ``x`` with ``w`` ("valid"), summed over channels.

    Args:
        x: (B, C, H, W) inputs.
        w: (O, C, kh, kw) kernels.
        padding: zeros added (negative: rows or columns removed) at the top, bottom, left and
            right of each image.
        method: "direct", "fft" or "auto".

    Returns:
        (B, O, H + top + bottom - kh + 1, W + left + right - kw + 1).

    >>> import torch
    >>> from npgrad_scipy.conv import correlate_channels
    >>> x, w = torch.ones(2, 3, 5, 5), torch.ones(4, 3, 3, 3)
    >>> correlate_channels(x, w, padding=(1, 1, 1, 1)).shape
    torch.Size([2, 4, 5, 5])
    """
    _check_method("scipy::correlate_channels", method)
    if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1]:
        raise InputError(
            f'npgrad op "scipy::correlate_channels": got x of shape {x.shape} and w of shape '
            f"{w.shape}; expected x (B, C, H, W) and w (O, C, kh, kw) with the same C"
        )
    xp = _pad(x, padding)
    if xp.shape[2] < w.shape[2] or xp.shape[3] < w.shape[3]:
        raise InputError(
            f'npgrad op "scipy::correlate_channels": the padded input is {xp.shape[2:]} but '
            f"the kernel is {w.shape[2:]}; expected a kernel no larger than the padded input; "
            f"pad more or use a smaller kernel"
        )
    return correlate(xp, w, method)


@correlate_channels.tensor_backward
def correlate_channels_gradients(
    grad: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    *,
    padding: Padding = (0, 0, 0, 0),
    method: str = "auto",
    needs_input_grad: tuple[bool, ...],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    kh, kw = w.shape[-2:]
    top, bottom, left, right = padding
    grad_x = grad_w = None
    if needs_input_grad[0]:
        grad_x = correlate_channels(
            grad,
            w.flip((-2, -1)).transpose(0, 1),
            padding=(kh - 1 - top, kh - 1 - bottom, kw - 1 - left, kw - 1 - right),
            method=method,
        )
    if needs_input_grad[1]:
        grad_w = correlate_channels(
            x.transpose(0, 1), grad.transpose(0, 1), padding=padding, method=method
        ).transpose(0, 1)
    return grad_x, grad_w


@correlate_channels.shape
def _(
    x: tuple[int, ...], w: tuple[int, ...], *, padding: Padding = (0, 0, 0, 0), method: str = "auto"
) -> tuple[int, ...]:
    top, bottom, left, right = padding
    return (x[0], w[0], x[2] + top + bottom - w[2] + 1, x[3] + left + right - w[3] + 1)


@correlate_channels.example
def _() -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (torch.randn(2, 3, 6, 7), torch.randn(2, 3, 3, 2)), {"padding": (1, 0, 2, 1)}


@correlate_channels.example
def _() -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (torch.randn(1, 2, 9, 8), torch.randn(3, 2, 4, 5)), {"method": "fft"}


# --- single-kernel correlation and convolution ---------------------------------------------


@npgrad.op("scipy::correlate2d")
def correlate2d(x: Array, w: Array, *, mode: str = "valid", method: str = "auto") -> Array:
    """Cross-correlate the last two dims of ``x`` with the 2-D kernel ``w``.

    Equal to ``scipy.signal.correlate2d(x, w, mode)`` for each image of the batch.

    Args:
        x: (..., H, W) images.
        w: (kh, kw) kernel.
        mode: "valid", "same" or "full".
        method: "direct", "fft" or "auto".

    >>> import torch
    >>> from npgrad_scipy import correlate2d
    >>> correlate2d(torch.ones(4, 8, 8), torch.ones(3, 3), mode="same").shape
    torch.Size([4, 8, 8])
    """
    return _batched(x, w, _single_padding("scipy::correlate2d", x, w, mode, method, False), method)


@npgrad.op("scipy::convolve2d")
def convolve2d(x: Array, w: Array, *, mode: str = "valid", method: str = "auto") -> Array:
    """Convolve the last two dims of ``x`` with the 2-D kernel ``w``.

    Equal to ``scipy.signal.convolve2d(x, w, mode)`` for each image of the batch.

    Args:
        x: (..., H, W) images.
        w: (kh, kw) kernel.
        mode: "valid", "same" or "full".
        method: "direct", "fft" or "auto".

    >>> import torch
    >>> from npgrad_scipy import convolve2d
    >>> convolve2d(torch.ones(8, 8), torch.ones(2, 2), mode="full").shape
    torch.Size([9, 9])
    """
    padding = _single_padding("scipy::convolve2d", x, w, mode, method, True)
    return _batched(x, w[::-1, ::-1], padding, method)


def _single_kernel_backward(convolve: bool) -> Any:
    def backward(
        grad: torch.Tensor,
        x: torch.Tensor,
        w: torch.Tensor,
        *,
        mode: str = "valid",
        method: str = "auto",
        needs_input_grad: tuple[bool, ...],
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        padding = _padding(mode, tuple(w.shape), convolve=convolve)
        return _single_backward(grad, x, w, padding, method, needs_input_grad, flip=convolve)

    return backward


correlate2d.tensor_backward(_single_kernel_backward(convolve=False))
convolve2d.tensor_backward(_single_kernel_backward(convolve=True))


def _single_kernel_shape(
    x: tuple[int, ...], w: tuple[int, ...], *, mode: str = "valid", method: str = "auto"
) -> tuple[int, ...]:
    return (*x[:-2], *_spatial(x[-2:], w, mode))


correlate2d.shape(_single_kernel_shape)
convolve2d.shape(_single_kernel_shape)


def _spatial(image: Sequence[int], kernel: Sequence[int], mode: str) -> tuple[int, int]:
    """Return the output's (H', W') for an image, a kernel and a mode."""
    grow = {"valid": -1, "same": 0, "full": 1}[mode]
    if grow == 0:
        return image[0], image[1]
    return image[0] + grow * (kernel[0] - 1), image[1] + grow * (kernel[1] - 1)


def _single_example(mode: str, shape: tuple[int, int]) -> Any:
    def example() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (torch.randn(2, 7, 8), torch.randn(*shape)), {"mode": mode}

    return example


for _mode, _shape in (("valid", (3, 2)), ("same", (2, 4)), ("full", (3, 3))):
    correlate2d.example(_single_example(_mode, _shape))
    convolve2d.example(_single_example(_mode, _shape))


def _batched(x: Array, w: Array, padding: Padding, method: str) -> Array:
    lead, (h, width) = x.shape[:-2], x.shape[-2:]
    images = x.reshape(-1, 1, h, width)
    out = correlate(_pad(images, padding), w[None, None], method)
    return out.reshape(*lead, *out.shape[-2:])


def _single_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    padding: Padding,
    method: str,
    needs: tuple[bool, ...],
    flip: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    # One kernel over a batch: as a channel correlation whose batch is the images, so that the
    # weight gradient's channel sum is the sum over the batch.
    kernel = (w.flip((0, 1)) if flip else w)[None, None]
    images = x.reshape(-1, 1, *x.shape[-2:])
    grads = grad.reshape(-1, 1, *grad.shape[-2:])
    grad_images, grad_kernel = correlate_channels_backward(
        grads, images, kernel, padding, method, (needs[0], needs[1])
    )
    grad_x = None if grad_images is None else grad_images.reshape(x.shape)
    grad_w = None
    if grad_kernel is not None:
        grad_w = grad_kernel[0, 0].flip((0, 1)) if flip else grad_kernel[0, 0]
    return grad_x, grad_w


def correlate_channels_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    padding: Padding,
    method: str,
    needs: tuple[bool, ...],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Return the gradients of ``correlate_channels(x, w, padding=padding)``, as ops."""
    return correlate_channels_gradients(
        grad, x, w, padding=padding, method=method, needs_input_grad=needs
    )


# --- multi-channel convolution -------------------------------------------------------------


@npgrad.op("scipy::conv2d")
def conv2d(
    input: Array,
    weight: Array,
    bias: Array | None = None,
    *,
    mode: str = "valid",
    method: str = "auto",
) -> Array:
    """Convolve (N, C_in, H, W) images with (C_out, C_in, kh, kw) kernels, summed over C_in.

    ``out[n, o] = sum_c scipy.signal.convolve2d(input[n, c], weight[o, c], mode) + bias[o]``.

    Args:
        input: (N, C_in, H, W) images.
        weight: (C_out, C_in, kh, kw) kernels.
        bias: (C_out,) biases, or None.
        mode: "valid", "same" or "full".
        method: "direct", "fft" or "auto".

    >>> import torch
    >>> from npgrad_scipy import conv2d
    >>> conv2d(torch.ones(2, 3, 8, 8), torch.ones(4, 3, 3, 3), mode="same").shape
    torch.Size([2, 4, 8, 8])
    """
    _check_method("scipy::conv2d", method)
    _check_mode("scipy::conv2d", mode)
    if input.ndim != 4 or weight.ndim != 4 or input.shape[1] != weight.shape[1]:
        raise InputError(
            f'npgrad op "scipy::conv2d": got input of shape {input.shape} and weight of shape '
            f"{weight.shape}; expected input (N, C_in, H, W) and weight (C_out, C_in, kh, kw) "
            f"with the same C_in"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise InputError(
            f'npgrad op "scipy::conv2d": got bias of shape {bias.shape}; expected '
            f"({weight.shape[0]},), one per output channel, or None"
        )
    _check_fits("scipy::conv2d", input.shape[-2:], weight.shape[-2:], mode)
    padding = _padding(mode, weight.shape[-2:], convolve=True)
    out = correlate(_pad(input, padding), weight[..., ::-1, ::-1], method)
    if bias is not None:
        out += bias[:, None, None]
    return out


@conv2d.tensor_backward
def _(
    grad: torch.Tensor,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    mode: str = "valid",
    method: str = "auto",
    needs_input_grad: tuple[bool, ...],
) -> tuple[torch.Tensor | None, ...]:
    padding = _padding(mode, tuple(weight.shape[-2:]), convolve=True)
    grad_input, grad_flipped = correlate_channels_backward(
        grad, input, weight.flip((-2, -1)), padding, method, tuple(needs_input_grad[:2])
    )
    grad_weight = None if grad_flipped is None else grad_flipped.flip((-2, -1))
    grad_bias = grad.sum(dim=(0, 2, 3)) if needs_input_grad[2] else None
    return grad_input, grad_weight, grad_bias


@conv2d.shape
def _(
    input: tuple[int, ...],
    weight: tuple[int, ...],
    bias: tuple[int, ...] | None = None,
    *,
    mode: str = "valid",
    method: str = "auto",
) -> tuple[int, ...]:
    return (input[0], weight[0], *_spatial(input[-2:], weight[-2:], mode))


def _conv_example(mode: str, method: str, kernel: tuple[int, int]) -> Any:
    def example() -> tuple[tuple[Any, ...], dict[str, Any]]:
        args = (torch.randn(2, 2, 6, 7), torch.randn(3, 2, *kernel), torch.randn(3))
        return args, {"mode": mode, "method": method}

    return example


for _mode in MODES:
    for _method in ("direct", "fft"):
        conv2d.example(_conv_example(_mode, _method, (3, 2) if _mode == "same" else (3, 3)))


# --- padding and checks --------------------------------------------------------------------


def _padding(mode: str, kernel: Sequence[int], *, convolve: bool) -> Padding:
    """Return the zero padding (top, bottom, left, right) that makes ``mode`` a valid correlation.

    "same" centres the output as SciPy does: for an even kernel a correlation pads one less at
    the top and left than a convolution.
    """
    kh, kw = kernel
    if mode == "valid":
        return (0, 0, 0, 0)
    if mode == "full":
        return (kh - 1, kh - 1, kw - 1, kw - 1)
    top = kh // 2 if convolve else (kh - 1) // 2
    left = kw // 2 if convolve else (kw - 1) // 2
    return (top, kh - 1 - top, left, kw - 1 - left)


def _single_padding(
    name: str, x: Array, w: Array, mode: str, method: str, convolve: bool
) -> Padding:
    _check_method(name, method)
    _check_mode(name, mode)
    if x.ndim < 2 or w.ndim != 2:
        raise InputError(
            f'npgrad op "{name}": got x of shape {x.shape} and w of shape {w.shape}; expected x '
            f"(..., H, W) with at least two dims and a 2-D kernel w (kh, kw)"
        )
    _check_fits(name, x.shape[-2:], w.shape, mode)
    return _padding(mode, w.shape, convolve=convolve)


def _check_fits(name: str, image: Sequence[int], kernel: Sequence[int], mode: str) -> None:
    if mode == "valid" and (kernel[0] > image[0] or kernel[1] > image[1]):
        raise InputError(
            f'npgrad op "{name}": in "valid" mode the kernel {tuple(kernel)} must fit in the '
            f"image {tuple(image)}; use a smaller kernel, or mode 'same' or 'full'"
        )


def _check_mode(name: str, mode: str) -> None:
    if mode not in MODES:
        raise InputError(f'npgrad op "{name}": mode={mode!r}; expected one of {", ".join(MODES)}')


def _check_method(name: str, method: str) -> None:
    if method not in METHODS:
        raise InputError(
            f'npgrad op "{name}": method={method!r}; expected one of {", ".join(METHODS)}'
        )


# --- the tutorial's op ---------------------------------------------------------------------


@npgrad.op("scipy::scipy_conv2d")
def scipy_conv2d(input: Array, filter: Array, bias: Array) -> Array:
    """Cross-correlate a 2-D ``input`` with ``filter`` ("valid") and add ``bias``.

    The op of PyTorch's tutorial, with the tutorial's NumPy backward: the input's gradient is
    the full convolution of the output gradient with the filter, the filter's the valid
    cross-correlation of the input with the output gradient, the bias's the output gradient
    (npgrad sums it down to the bias's (1, 1) shape).

    Args:
        input: an (H, W) image.
        filter: a (kh, kw) filter.
        bias: a bias broadcast over the output, e.g. of shape (1, 1).

    >>> import torch
    >>> from npgrad_scipy import scipy_conv2d
    >>> scipy_conv2d(torch.ones(5, 5), torch.ones(2, 2), torch.zeros(1, 1)).shape
    torch.Size([4, 4])
    """
    return _scipy_correlate2d(input, filter, mode="valid") + bias


@scipy_conv2d.backward
def _(grad: Array, input: Array, filter: Array, bias: Array) -> tuple[Array, Array, Array]:
    return (
        _scipy_convolve2d(grad, filter, mode="full"),
        _scipy_correlate2d(input, grad, mode="valid"),
        grad,
    )


@scipy_conv2d.shape
def _(input: tuple[int, ...], filter: tuple[int, ...], bias: tuple[int, ...]) -> tuple[int, ...]:
    return _spatial(input, filter, "valid")


@scipy_conv2d.example
def _() -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (torch.randn(10, 10), torch.randn(3, 3), torch.randn(1, 1)), {}


# --- layers --------------------------------------------------------------------------------


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


class Conv2d(npgrad.Layer):
    """A 2-D convolution layer on SciPy's math, a drop-in for ``nn.Conv2d``'s common case.

    Parameters ``weight`` (C_out, C_in, kh, kw) and ``bias`` (C_out,) are named and initialised
    as in ``nn.Conv2d``. The convolution is a true one (kernel flipped), with SciPy's modes.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: kh and kw, or one int for both.
        mode: "valid", "same" or "full".
        bias: whether to learn a bias.
        method: "direct", "fft" or "auto".

    >>> import torch
    >>> from npgrad_scipy import Conv2d
    >>> Conv2d(3, 8, 5, mode="same")(torch.randn(2, 3, 16, 16)).shape
    torch.Size([2, 8, 16, 16])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        *,
        mode: str = "valid",
        bias: bool = True,
        method: str = "auto",
    ) -> None:
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        weight = torch.empty(out_channels, in_channels, kh, kw)
        # nn.Conv2d's initialisation (reset_parameters), so that swapping layers changes nothing.
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        values: dict[str, Any] = {"weight": weight, "bias": None, "mode": mode, "method": method}
        if bias:
            bound = 1 / math.sqrt(in_channels * kh * kw) if in_channels * kh * kw else 0
            values["bias"] = torch.empty(out_channels).uniform_(-bound, bound)
        super().__init__(conv2d, **values)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (kh, kw)
