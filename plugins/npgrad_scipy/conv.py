"""Convolution and correlation ops on NumPy and SciPy, in any number of dims, to any order.

Ops (each registered as ``scipy::<name>``):

- ``convolve(in1, in2)`` and ``correlate(in1, in2)``: N-dimensional, equal to
  ``scipy.signal.convolve`` / ``correlate`` in every mode ("full", the default, "same",
  "valid") and method; ``in1`` may have leading batch dims beyond ``in2``'s. In "valid" mode a
  kernel larger than the input in every dim is taken as SciPy takes it (the two swap).
- ``correlate2d(x, w)`` and ``convolve2d(x, w)``: the 2-D case, equal to
  ``scipy.signal.correlate2d`` / ``convolve2d`` in every mode, even kernels included; their
  default is "valid" (the tutorial's; SciPy's is "full").
- ``conv1d``, ``conv2d``, ``conv3d(input, weight, bias=None)``: (N, C_in, *S) x
  (C_out, C_in, *K) -> (N, C_out, *S'), true convolutions (the kernel flipped, as in
  ``scipy.signal.convolve``) summed over input channels; the layers ``Conv1d``, ``Conv2d`` and
  ``Conv3d`` hold their weights with ``nn.ConvNd``'s names and initialisation.
- ``correlate_channels(x, w, padding=...)``: the primitive the others reduce to: a valid
  correlation of the zero-padded ``x`` (B, C, *S) with ``w`` (O, C, *K), summed over C.
- ``scipy_conv2d(input, filter, bias)``: the op of PyTorch's tutorial "Creating extensions using
  numpy and scipy", with the tutorial's NumPy backward (differentiable once, as written there).

``method`` is "direct" (sliding windows and BLAS), "fft" (``scipy.fft``) or "auto", which picks
the faster for each call from the sizes. Gradients: for ``y = correlate_channels(x, w)`` with
padding (before_d, after_d) along each spatial dim d,

- ``dL/dx = correlate_channels(dL/dy, flip(w) with in/out channels swapped,
  padding=(k_d-1-before_d, k_d-1-after_d))``: a full convolution, cropped;
- ``dL/dw = correlate_channels(x with batch and channels swapped, dL/dy likewise, padding)``: a
  valid correlation of the input with the output gradient.

Both are ``correlate_channels`` again, so every op here (but the tutorial's) is differentiable
to any order, and has forward mode (the transpose of that backward: the op on the tangents).
HIPS autograd's ``convolve(A, B, axes=, dot_axes=)`` generalisation is not provided: the
channel sum of ``correlate_channels`` covers its common use.
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
# (before, after) for each spatial dim in turn.
Padding = tuple[int, ...]
MODES = ("valid", "same", "full")


# --- the primitive -------------------------------------------------------------------------


@npgrad.op("scipy::correlate_channels")
def correlate_channels(
    x: Array, w: Array, *, padding: Padding = (0, 0, 0, 0), method: str = "auto"
) -> Array:
    """Correlate the zero-padded ``x`` with ``w`` ("valid"), summed over channels.

    Args:
        x: (B, C, *S) inputs, any number of spatial dims.
        w: (O, C, *K) kernels, as many spatial dims.
        padding: zeros added (negative: elements removed) before and after each spatial dim in
            turn, e.g. (top, bottom, left, right) in 2-D; all zeros (the default) for none.
        method: "direct", "fft" or "auto".

    Returns:
        (B, O, *(S + before + after - K + 1)).

    Examples:
        >>> import torch
        >>> from npgrad_scipy.conv import correlate_channels
        >>> x, w = torch.ones(2, 3, 5, 5), torch.ones(4, 3, 3, 3)
        >>> correlate_channels(x, w, padding=(1, 1, 1, 1)).shape
        torch.Size([2, 4, 5, 5])
    """
    _check_method("scipy::correlate_channels", method)
    if x.ndim < 3 or w.ndim != x.ndim or x.shape[1] != w.shape[1]:
        raise InputError(
            f'npgrad op "scipy::correlate_channels": got x of shape {x.shape} and w of shape '
            f"{w.shape}; expected x (B, C, *S) and w (O, C, *K) with as many spatial dims and "
            f"the same C"
        )
    padding = _pairs("scipy::correlate_channels", padding, x.ndim - 2)
    xp = _pad(x, padding)
    if any(n < k for n, k in zip(xp.shape[2:], w.shape[2:], strict=True)):
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
    dims = w.dim() - 2
    padding = _pairs("scipy::correlate_channels", padding, dims)
    grad_x = grad_w = None
    if needs_input_grad[0]:
        kernel = w.shape[2:]
        full = tuple(kernel[d] - 1 - padding[2 * d + side] for d in range(dims) for side in (0, 1))
        # Complex values: the gradient of z is dL/dz*, so the other factor enters conjugated
        # (a no-op for real tensors).
        grad_x = correlate_channels(
            grad,
            w.conj().flip(tuple(range(2, 2 + dims))).transpose(0, 1),
            padding=full,
            method=method,
        )
    if needs_input_grad[1]:
        grad_w = correlate_channels(
            x.conj().transpose(0, 1), grad.transpose(0, 1), padding=padding, method=method
        ).transpose(0, 1)
    return grad_x, grad_w


@correlate_channels.shape
def _(
    x: tuple[int, ...], w: tuple[int, ...], *, padding: Padding = (0, 0, 0, 0), method: str = "auto"
) -> tuple[int, ...]:
    pairs = _pairs("scipy::correlate_channels", padding, len(x) - 2)
    spatial = [x[2 + d] + pairs[2 * d] + pairs[2 * d + 1] - w[2 + d] + 1 for d in range(len(x) - 2)]
    return (x[0], w[0], *spatial)


@correlate_channels.example
def _() -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (torch.randn(2, 3, 6, 7), torch.randn(2, 3, 3, 2)), {"padding": (1, 0, 2, 1)}


@correlate_channels.example
def _() -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (torch.randn(1, 2, 9, 8), torch.randn(3, 2, 4, 5)), {"method": "fft"}


@correlate_channels.example
def _() -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (torch.randn(2, 1, 5, 4, 6), torch.randn(2, 1, 2, 3, 2)), {"padding": (1, 1, 0, 2, 1, 0)}


def _pairs(name: str, padding: Padding, dims: int) -> Padding:
    """Return ``padding`` as (before, after) pairs for ``dims`` spatial dims (zeros if none)."""
    if not any(padding):
        return (0,) * (2 * dims)
    if len(padding) != 2 * dims:
        raise InputError(
            f'npgrad op "{name}": padding {tuple(padding)} has {len(padding)} values for '
            f"{dims} spatial dims; expected {2 * dims}: before and after each dim in turn"
        )
    return tuple(padding)


# --- N-dimensional correlation and convolution, as scipy.signal has them -------------------


@npgrad.op("scipy::correlate")
def correlate_nd(in1: Array, in2: Array, *, mode: str = "full", method: str = "auto") -> Array:
    """Cross-correlate ``in1`` with ``in2`` over ``in2``'s dims, as ``scipy.signal.correlate``.

    Args:
        in1: (..., *S): leading dims beyond ``in2``'s are a batch, each correlated alone.
        in2: (*K): the kernel, of any number of dims.
        mode: "full" (the default, as SciPy's), "same" or "valid".
        method: "direct", "fft" or "auto".

    Examples:
        >>> import torch
        >>> from npgrad_scipy.signal import correlate
        >>> correlate(torch.ones(8, 6, 5), torch.ones(3, 2, 2)).shape
        torch.Size([10, 7, 6])
    """
    return _single(in1, in2, mode, method, "scipy::correlate", convolve=False, two=False)


@npgrad.op("scipy::convolve")
def convolve_nd(in1: Array, in2: Array, *, mode: str = "full", method: str = "auto") -> Array:
    """Convolve ``in1`` with ``in2`` over ``in2``'s dims, as ``scipy.signal.convolve``.

    Args:
        in1: (..., *S): leading dims beyond ``in2``'s are a batch, each convolved alone.
        in2: (*K): the kernel, of any number of dims.
        mode: "full" (the default, as SciPy's), "same" or "valid".
        method: "direct", "fft" or "auto".

    Examples:
        >>> import torch
        >>> from npgrad_scipy.signal import convolve
        >>> convolve(torch.ones(4, 10), torch.ones(3), mode="same").shape
        torch.Size([4, 10])
    """
    return _single(in1, in2, mode, method, "scipy::convolve", convolve=True, two=False)


@npgrad.op("scipy::correlate2d")
def correlate2d(
    x: Array,
    w: Array,
    *,
    mode: str = "valid",
    method: str = "auto",
    boundary: str = "fill",
    fillvalue: float = 0.0,
) -> Array:
    """Cross-correlate the last two dims of ``x`` with the 2-D kernel ``w``.

    Equal to ``scipy.signal.correlate2d(x, w, mode, boundary, fillvalue)`` for each image of
    the batch.

    Args:
        x: (..., H, W) images.
        w: (kh, kw) kernel.
        mode: "valid", "same" or "full".
        method: "direct", "fft" or "auto".
        boundary: the input beyond its borders: "fill" (``fillvalue``), "wrap" (periodic) or
            "symm" (mirrored, the edge repeated).
        fillvalue: the value beyond the borders with ``boundary="fill"``.

    Examples:
        >>> import torch
        >>> from npgrad_scipy import correlate2d
        >>> correlate2d(torch.ones(4, 8, 8), torch.ones(3, 3), mode="same").shape
        torch.Size([4, 8, 8])
    """
    if _bounded(mode, boundary, fillvalue, "scipy::correlate2d"):
        return _extended_forward(x, w, mode, method, boundary, fillvalue, convolve=False)
    return _single(x, w, mode, method, "scipy::correlate2d", convolve=False, two=True)


@npgrad.op("scipy::convolve2d")
def convolve2d(
    x: Array,
    w: Array,
    *,
    mode: str = "valid",
    method: str = "auto",
    boundary: str = "fill",
    fillvalue: float = 0.0,
) -> Array:
    """Convolve the last two dims of ``x`` with the 2-D kernel ``w``.

    Equal to ``scipy.signal.convolve2d(x, w, mode, boundary, fillvalue)`` for each image of
    the batch.

    Args:
        x: (..., H, W) images.
        w: (kh, kw) kernel.
        mode: "valid", "same" or "full".
        method: "direct", "fft" or "auto".
        boundary: the input beyond its borders: "fill" (``fillvalue``), "wrap" (periodic) or
            "symm" (mirrored, the edge repeated).
        fillvalue: the value beyond the borders with ``boundary="fill"``.

    Examples:
        >>> import torch
        >>> from npgrad_scipy import convolve2d
        >>> convolve2d(torch.ones(8, 8), torch.ones(2, 2), mode="full").shape
        torch.Size([9, 9])
    """
    if _bounded(mode, boundary, fillvalue, "scipy::convolve2d"):
        return _extended_forward(x, w, mode, method, boundary, fillvalue, convolve=True)
    return _single(x, w, mode, method, "scipy::convolve2d", convolve=True, two=True)


# SciPy's boundaries of the 2-D convolutions, as numpy.pad names them ("fill": a constant).
_BOUNDARIES = {"fill": "constant", "wrap": "wrap", "symm": "symmetric"}


def _bounded(mode: str, boundary: str, fillvalue: float, name: str) -> bool:
    """Whether the input must be extended by its boundary rule, not by zeros."""
    if boundary not in _BOUNDARIES:
        raise InputError(
            f'npgrad op "{name}": boundary={boundary!r}; expected "fill", "wrap" or "symm", as '
            f"scipy.signal takes them"
        )
    # In "valid" mode no output reads beyond the borders: SciPy ignores the boundary there.
    return mode != "valid" and (boundary != "fill" or fillvalue != 0)


def _extension(n: int, before: int, after: int, boundary: str) -> Array:
    """For each position of the extended axis, the input position it copies (-1: fillvalue)."""
    if boundary == "fill":
        index = np.full(n + before + after, -1)
        index[before : before + n] = np.arange(n)
        return index
    return np.pad(np.arange(n), (before, after), mode=_BOUNDARIES[boundary])  # type: ignore[call-overload]


def _extensions(
    image: Sequence[int], kernel: Sequence[int], mode: str, boundary: str, convolve: bool
) -> list[Array]:
    padding = _padding(mode, kernel, convolve=convolve)
    return [
        _extension(n, padding[2 * d], padding[2 * d + 1], boundary) for d, n in enumerate(image)
    ]


def _extended_forward(
    x: Array, w: Array, mode: str, method: str, boundary: str, fillvalue: float, *,
    convolve: bool,
) -> Array:  # fmt: skip
    """The 2-D ops with a boundary other than zeros: the input extended, then "valid"."""
    name = "scipy::convolve2d" if convolve else "scipy::correlate2d"
    _check_method(name, method)
    _check_mode(name, mode)
    if w.ndim != 2 or x.ndim < 2:
        raise InputError(
            f'npgrad op "{name}": got inputs of shapes {x.shape} and {w.shape}; expected a 2-D '
            f"kernel w (kh, kw) and x (..., H, W)"
        )
    if not convolve and w.dtype.kind == "c":
        w = np.conj(w)  # SciPy's correlation conjugates its second input
    rows, cols = _extensions(x.shape[-2:], w.shape, mode, boundary, convolve)
    extended = np.take(np.take(x, np.maximum(rows, 0), axis=-2), np.maximum(cols, 0), axis=-1)
    if boundary == "fill":
        inside = (rows >= 0)[:, None] & (cols >= 0)[None, :]
        extended = np.where(inside, extended, np.asarray(fillvalue, dtype=extended.dtype))
    kernel = w[::-1, ::-1] if convolve else w
    images = extended.reshape(-1, 1, *extended.shape[-2:])
    out = correlate(images, kernel[None, None], method)
    return out.reshape(*x.shape[:-2], *out.shape[2:])


def _extended_backward(
    grad: torch.Tensor, x: torch.Tensor, w: torch.Tensor, mode: str, method: str,
    boundary: str, fillvalue: float, convolve: bool, needs: tuple[bool, ...],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # fmt: skip
    """Gradients of `_extended_forward`: of the valid correlation, then of the extension.

    The extension gathers input positions (and a constant); its adjoint adds each extended
    position's gradient back onto the position it copied. Both are torch ops, so every order
    follows.
    """
    rows, cols = (
        torch.from_numpy(index).to(x.device)
        for index in _extensions(tuple(x.shape[-2:]), tuple(w.shape), mode, boundary, convolve)
    )
    extended = x.index_select(-2, rows.clamp(min=0)).index_select(-1, cols.clamp(min=0))
    if boundary == "fill":
        inside = (rows >= 0)[:, None] & (cols >= 0)[None, :]
        extended = torch.where(inside, extended, torch.full_like(extended, fillvalue))
    kernel = (w.flip((0, 1)) if convolve else w)[None, None]
    images = extended.reshape(-1, 1, *extended.shape[-2:])
    grads = grad.reshape(-1, 1, *grad.shape[-2:])
    grad_images, grad_kernel = correlate_channels_backward(
        grads, images, kernel, (0, 0, 0, 0), method, needs
    )
    grad_x = None
    if grad_images is not None:
        grad_x = _gathered_adjoint(grad_images.reshape(extended.shape), rows, -2, x.shape[-2])
        grad_x = _gathered_adjoint(grad_x, cols, -1, x.shape[-1])
    grad_w = None
    if grad_kernel is not None:
        grad_w = grad_kernel[0, 0].flip((0, 1)) if convolve else grad_kernel[0, 0]
    return grad_x, grad_w


def _gathered_adjoint(g: torch.Tensor, index: torch.Tensor, dim: int, n: int) -> torch.Tensor:
    """Return the adjoint of ``x.index_select(dim, index)`` (positions -1 dropped) applied to g."""
    kept = (index >= 0).nonzero().squeeze(1)
    shape = list(g.shape)
    shape[dim] = n
    return g.new_zeros(shape).index_add(dim, index[kept], g.index_select(dim, kept))


def _single(
    x: Array, w: Array, mode: str, method: str, name: str, *, convolve: bool, two: bool
) -> Array:
    """One kernel ``w`` over the trailing dims of ``x``: the forward of the four ops above."""
    _check_method(name, method)
    _check_mode(name, mode)
    if (two and w.ndim != 2) or w.ndim < 1 or x.ndim < w.ndim:
        expected = "a 2-D kernel w (kh, kw) and x (..., H, W)" if two else (
            "a kernel in2 of at least one dim and in1 with at least as many"
        )  # fmt: skip
        raise InputError(
            f'npgrad op "{name}": got inputs of shapes {x.shape} and {w.shape}; expected {expected}'
        )
    dims = w.ndim
    image = x.shape[x.ndim - dims :]
    if _conjugated_swap(x, w, mode, convolve, two):
        # scipy.signal.correlate2d, swapping its inputs, conjugates the other one (x): the
        # conjugate of what scipy.signal.correlate gives.
        return np.conj(_single(x, w, mode, method, name, convolve=False, two=False))
    if not convolve and w.dtype.kind == "c":
        w = np.conj(w)  # SciPy's correlation conjugates its second input
    kernel = w[(slice(None, None, -1),) * dims] if convolve else w
    if _swapped(image, w.shape, mode):
        # SciPy's valid mode with the kernel larger in every dim: the two swap (convolution
        # commutes; a correlation swaps and reverses).
        reverse = (slice(None), slice(None), *(slice(None, None, -1),) * dims)
        images = x.reshape(-1, 1, *image)
        out = correlate(w[None, None], images[reverse] if convolve else images, method)
        if not convolve:
            out = out[reverse]
        return np.ascontiguousarray(out[0].reshape(*x.shape[: x.ndim - dims], *out.shape[2:]))
    _check_fits(name, image, w.shape, mode)
    # "same" keeps the centre of "full": scipy.signal.correlate2d alone centres an even
    # kernel's correlation one element further.
    padding = _padding(mode, w.shape, convolve=convolve or not two)
    images = x.reshape(-1, 1, *image)
    out = correlate(_pad(images, padding), kernel[None, None], method)
    return out.reshape(*x.shape[: x.ndim - dims], *out.shape[2:])


def _conjugated_swap(x: Any, w: Any, mode: str, convolve: bool, two: bool) -> bool:
    """Whether this is correlate2d's swapped "valid" case with complex values (see `_single`)."""
    complex_values = x.dtype.is_complex if isinstance(x, torch.Tensor) else x.dtype.kind == "c"
    complex_values |= w.dtype.is_complex if isinstance(w, torch.Tensor) else w.dtype.kind == "c"
    image = tuple(x.shape[len(x.shape) - len(w.shape) :])
    return two and not convolve and complex_values and _swapped(image, tuple(w.shape), mode)


def _swapped(image: Sequence[int], kernel: Sequence[int], mode: str) -> bool:
    return mode == "valid" and all(k >= n for n, k in zip(image, kernel, strict=True)) and (
        tuple(kernel) != tuple(image)
    )  # fmt: skip


def _single_kernel_backward(convolve: bool, two: bool) -> Any:
    def backward(
        grad: torch.Tensor,
        x: torch.Tensor,
        w: torch.Tensor,
        *,
        mode: str = "valid",
        method: str = "auto",
        boundary: str = "fill",
        fillvalue: float = 0.0,
        needs_input_grad: tuple[bool, ...],
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        needs = (needs_input_grad[0], needs_input_grad[1])
        two_dims = two
        if _conjugated_swap(x, w, mode, convolve, two):
            # The forward is conj(correlate(x, w)): the gradient of its inside is conj(grad).
            grad, two_dims = grad.conj(), False
        if not convolve:
            # The forward correlates with conj(w): the gradient of w is the conjugate of that
            # kernel's (the identity for real tensors).
            grad_x, grad_conj = _kernel_gradients(
                grad, x, w.conj(), mode, method, boundary, fillvalue, needs, two_dims, False
            )
            return grad_x, None if grad_conj is None else grad_conj.conj()
        return _kernel_gradients(grad, x, w, mode, method, boundary, fillvalue, needs, two, True)

    return backward


def _kernel_gradients(
    grad: torch.Tensor, x: torch.Tensor, w: torch.Tensor, mode: str, method: str,
    boundary: str, fillvalue: float, needs: tuple[bool, bool], two: bool, convolve: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # fmt: skip
    """Gradients of the four single-kernel ops, for a kernel ``w`` used as it is."""
    if two and _bounded(mode, boundary, fillvalue, ""):
        return _extended_backward(grad, x, w, mode, method, boundary, fillvalue, convolve, needs)
    dims = w.dim()
    image = tuple(x.shape[x.dim() - dims :])
    axes = tuple(range(dims))
    if _swapped(image, tuple(w.shape), mode):
        # As the forward: the kernel is the input, the images the kernels.
        images = x.reshape(-1, 1, *image)
        kernels = images.flip(tuple(range(2, 2 + dims))) if convolve else images
        grads = grad.reshape(-1, *grad.shape[grad.dim() - dims :])[None]
        if not convolve:
            grads = grads.flip(tuple(range(2, 2 + dims)))
        grad_w, grad_kernels = correlate_channels_backward(
            grads, w[None, None], kernels, (0,) * (2 * dims), method, (needs[1], needs[0])
        )
        grad_x = grad_kernel_to_images(grad_kernels, convolve, dims, x.shape)
        return grad_x, (None if grad_w is None else grad_w[0, 0])
    padding = _padding(mode, tuple(w.shape), convolve=convolve or not two)
    kernel = (w.flip(axes) if convolve else w)[None, None]
    images = x.reshape(-1, 1, *image)
    grads = grad.reshape(-1, 1, *grad.shape[grad.dim() - dims :])
    grad_images, grad_kernel = correlate_channels_backward(
        grads, images, kernel, padding, method, needs
    )
    grad_x = None if grad_images is None else grad_images.reshape(x.shape)
    grad_w = None
    if grad_kernel is not None:
        grad_w = grad_kernel[0, 0].flip(axes) if convolve else grad_kernel[0, 0]
    return grad_x, grad_w


def grad_kernel_to_images(
    grad_kernels: torch.Tensor | None, convolve: bool, dims: int, shape: Sequence[int]
) -> torch.Tensor | None:
    """Map the gradient of the swapped forward's kernels back onto the images."""
    if grad_kernels is None:
        return None
    if convolve:
        grad_kernels = grad_kernels.flip(tuple(range(2, 2 + dims)))
    return grad_kernels.reshape(shape)


correlate_nd.tensor_backward(_single_kernel_backward(convolve=False, two=False))
convolve_nd.tensor_backward(_single_kernel_backward(convolve=True, two=False))
correlate2d.tensor_backward(_single_kernel_backward(convolve=False, two=True))
convolve2d.tensor_backward(_single_kernel_backward(convolve=True, two=True))


def _single_kernel_shape(
    x: tuple[int, ...], w: tuple[int, ...], *, mode: str = "valid", method: str = "auto", **_: Any
) -> tuple[int, ...]:
    return (*x[: len(x) - len(w)], *_spatial(x[len(x) - len(w) :], w, mode))


def _single_kernel_shape_full(
    x: tuple[int, ...], w: tuple[int, ...], *, mode: str = "full", method: str = "auto"
) -> tuple[int, ...]:
    return _single_kernel_shape(x, w, mode=mode, method=method)


correlate2d.shape(_single_kernel_shape)
convolve2d.shape(_single_kernel_shape)
correlate_nd.shape(_single_kernel_shape_full)
convolve_nd.shape(_single_kernel_shape_full)


def _spatial(image: Sequence[int], kernel: Sequence[int], mode: str) -> tuple[int, ...]:
    """Return the output's spatial shape for an image, a kernel and a mode (as SciPy's)."""
    if mode == "same":
        return tuple(image)
    if mode == "full":
        return tuple(n + k - 1 for n, k in zip(image, kernel, strict=True))
    return tuple(abs(n - k) + 1 for n, k in zip(image, kernel, strict=True))


def _single_example(op: Any, mode: str, x: tuple[int, ...], w: tuple[int, ...]) -> Any:
    def example() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (torch.randn(*x), torch.randn(*w)), {"mode": mode}

    return example


for _mode, _shape in (("valid", (3, 2)), ("same", (2, 4)), ("full", (3, 3))):
    correlate2d.example(_single_example(correlate2d, _mode, (2, 7, 8), _shape))
    convolve2d.example(_single_example(convolve2d, _mode, (2, 7, 8), _shape))
for _op in (correlate_nd, convolve_nd):
    _op.example(_single_example(_op, "full", (2, 9), (4,)))
    _op.example(_single_example(_op, "same", (5, 4, 6), (2, 3, 2)))
    _op.example(_single_example(_op, "valid", (3, 4), (5, 6)))  # the kernel larger


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


def _conv_forward(
    name: str, dims: int, input: Array, weight: Array, bias: Array | None, mode: str, method: str
) -> Array:
    _check_method(name, method)
    _check_mode(name, mode)
    if input.ndim != 2 + dims or weight.ndim != 2 + dims or input.shape[1] != weight.shape[1]:
        letters = "".join("DHW"[3 - dims :])
        raise InputError(
            f'npgrad op "{name}": got input of shape {input.shape} and weight of shape '
            f"{weight.shape}; expected input (N, C_in, {', '.join(letters)}) and weight "
            f"(C_out, C_in, {', '.join(f'k{c.lower()}' for c in letters)}) with the same C_in"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise InputError(
            f'npgrad op "{name}": got bias of shape {bias.shape}; expected '
            f"({weight.shape[0]},), one per output channel, or None"
        )
    _check_fits(name, input.shape[2:], weight.shape[2:], mode)
    padding = _padding(mode, weight.shape[2:], convolve=True)
    flipped = weight[(slice(None), slice(None), *(slice(None, None, -1),) * dims)]
    out = correlate(_pad(input, padding), flipped, method)
    if bias is not None:
        out += bias.reshape(-1, *(1,) * dims)
    return out


def _conv_backward(dims: int) -> Any:
    def backward(
        grad: torch.Tensor,
        input: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        mode: str = "valid",
        method: str = "auto",
        needs_input_grad: tuple[bool, ...],
    ) -> tuple[torch.Tensor | None, ...]:
        axes = tuple(range(2, 2 + dims))
        padding = _padding(mode, tuple(weight.shape[2:]), convolve=True)
        grad_input, grad_flipped = correlate_channels_backward(
            grad, input, weight.flip(axes), padding, method, tuple(needs_input_grad[:2])
        )
        grad_weight = None if grad_flipped is None else grad_flipped.flip(axes)
        grad_bias = grad.sum(dim=(0, *axes)) if needs_input_grad[2] else None
        return grad_input, grad_weight, grad_bias

    return backward


def _conv_shape(
    input: tuple[int, ...],
    weight: tuple[int, ...],
    bias: tuple[int, ...] | None = None,
    *,
    mode: str = "valid",
    method: str = "auto",
) -> tuple[int, ...]:
    return (input[0], weight[0], *_spatial(input[2:], weight[2:], mode))


@npgrad.op("scipy::conv1d")
def conv1d(
    input: Array, weight: Array, bias: Array | None = None, *, mode: str = "valid",
    method: str = "auto",
) -> Array:  # fmt: skip
    """Convolve (N, C_in, L) signals with (C_out, C_in, k) kernels, summed over C_in.

    ``out[n, o] = sum_c scipy.signal.convolve(input[n, c], weight[o, c], mode) + bias[o]``.

    Examples:
        >>> import torch
        >>> from npgrad_scipy import conv1d
        >>> conv1d(torch.ones(2, 3, 16), torch.ones(4, 3, 5), mode="same").shape
        torch.Size([2, 4, 16])
    """
    return _conv_forward("scipy::conv1d", 1, input, weight, bias, mode, method)


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

    Examples:
        >>> import torch
        >>> from npgrad_scipy import conv2d
        >>> conv2d(torch.ones(2, 3, 8, 8), torch.ones(4, 3, 3, 3), mode="same").shape
        torch.Size([2, 4, 8, 8])
    """
    return _conv_forward("scipy::conv2d", 2, input, weight, bias, mode, method)


@npgrad.op("scipy::conv3d")
def conv3d(
    input: Array, weight: Array, bias: Array | None = None, *, mode: str = "valid",
    method: str = "auto",
) -> Array:  # fmt: skip
    """Convolve (N, C_in, D, H, W) volumes with (C_out, C_in, kd, kh, kw) kernels, summed over C_in.

    ``out[n, o] = sum_c scipy.signal.convolve(input[n, c], weight[o, c], mode) + bias[o]``.

    Examples:
        >>> import torch
        >>> from npgrad_scipy import conv3d
        >>> conv3d(torch.ones(1, 2, 6, 6, 6), torch.ones(3, 2, 3, 3, 3)).shape
        torch.Size([1, 3, 4, 4, 4])
    """
    return _conv_forward("scipy::conv3d", 3, input, weight, bias, mode, method)


for _dims, _op in ((1, conv1d), (2, conv2d), (3, conv3d)):
    _op.tensor_backward(_conv_backward(_dims))
    _op.shape(_conv_shape)


def _conv_example(dims: int, mode: str, method: str) -> Any:
    def example() -> tuple[tuple[Any, ...], dict[str, Any]]:
        sizes = (6, 7, 5)[:dims] if dims < 3 else (4, 5, 4)
        kernel = ((3, 2, 2) if mode == "same" else (3, 3, 2))[:dims]
        args = (torch.randn(2, 2, *sizes), torch.randn(3, 2, *kernel), torch.randn(3))
        return args, {"mode": mode, "method": method}

    return example


for _mode in MODES:
    for _method in ("direct", "fft"):
        conv2d.example(_conv_example(2, _mode, _method))
    conv1d.example(_conv_example(1, _mode, "auto"))
    conv3d.example(_conv_example(3, _mode, "auto"))


# --- padding and checks --------------------------------------------------------------------


def _padding(mode: str, kernel: Sequence[int], *, convolve: bool) -> Padding:
    """Return the zero padding (before, after per dim) that makes ``mode`` a valid correlation.

    "same" centres the output as SciPy does: for an even kernel a correlation pads one less
    before than a convolution.
    """
    if mode == "valid":
        return (0,) * (2 * len(kernel))
    if mode == "full":
        return tuple(k - 1 for k in kernel for _ in (0, 1))
    pairs = []
    for k in kernel:
        before = k // 2 if convolve else (k - 1) // 2
        pairs += [before, k - 1 - before]
    return tuple(pairs)


def _check_fits(name: str, image: Sequence[int], kernel: Sequence[int], mode: str) -> None:
    if mode == "valid" and any(k > n for n, k in zip(image, kernel, strict=True)):
        raise InputError(
            f'npgrad op "{name}": in "valid" mode the kernel {tuple(kernel)} must fit in the '
            f"input {tuple(image)} (or, as in SciPy, hold it in every dim); use a smaller "
            f"kernel, or mode 'same' or 'full'"
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

    Examples:
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

    Examples:
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


class _ConvNd(npgrad.Layer):
    """A convolution layer on SciPy's math over ``dims`` spatial dims (see Conv1d/2d/3d)."""

    dims = 2
    op: Any = None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        *,
        mode: str = "valid",
        bias: bool = True,
        method: str = "auto",
    ) -> None:
        kernel = (kernel_size,) * self.dims if isinstance(kernel_size, int) else kernel_size
        if len(kernel) != self.dims:
            raise InputError(
                f"npgrad_scipy.{type(self).__name__}: kernel_size {kernel_size!r} has "
                f"{len(kernel)} sizes; expected one int, or {self.dims} sizes"
            )
        weight = torch.empty(out_channels, in_channels, *kernel)
        # nn.ConvNd's initialisation (reset_parameters), so that swapping layers changes nothing.
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        values: dict[str, Any] = {"weight": weight, "bias": None, "mode": mode, "method": method}
        if bias:
            fan_in = in_channels * math.prod(kernel)
            bound = 1 / math.sqrt(fan_in) if fan_in else 0
            values["bias"] = torch.empty(out_channels).uniform_(-bound, bound)
        super().__init__(type(self).op, **values)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = tuple(kernel)


class Conv1d(_ConvNd):
    """A 1-D convolution layer on SciPy's math, a drop-in for ``nn.Conv1d``'s common case.

    Parameters ``weight`` (C_out, C_in, k) and ``bias`` (C_out,) are named and initialised as
    in ``nn.Conv1d``. The convolution is a true one (kernel flipped), with SciPy's modes.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: k.
        mode: "valid", "same" or "full".
        bias: whether to learn a bias.
        method: "direct", "fft" or "auto".

    Examples:
        >>> import torch
        >>> from npgrad_scipy import Conv1d
        >>> Conv1d(3, 8, 5, mode="same")(torch.randn(2, 3, 32)).shape
        torch.Size([2, 8, 32])
    """

    dims = 1
    op = conv1d


class Conv2d(_ConvNd):
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

    Examples:
        >>> import torch
        >>> from npgrad_scipy import Conv2d
        >>> Conv2d(3, 8, 5, mode="same")(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 8, 16, 16])
    """

    dims = 2
    op = conv2d


class Conv3d(_ConvNd):
    """A 3-D convolution layer on SciPy's math, a drop-in for ``nn.Conv3d``'s common case.

    Parameters ``weight`` (C_out, C_in, kd, kh, kw) and ``bias`` (C_out,) are named and
    initialised as in ``nn.Conv3d``. The convolution is a true one (kernel flipped), with
    SciPy's modes.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: kd, kh and kw, or one int for all three.
        mode: "valid", "same" or "full".
        bias: whether to learn a bias.
        method: "direct", "fft" or "auto".

    Examples:
        >>> import torch
        >>> from npgrad_scipy import Conv3d
        >>> Conv3d(2, 4, 3, mode="same")(torch.randn(1, 2, 8, 8, 8)).shape
        torch.Size([1, 4, 8, 8, 8])
    """

    dims = 3
    op = conv3d
