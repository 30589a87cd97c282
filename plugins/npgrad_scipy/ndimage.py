"""``gaussian_filter`` from ``scipy.ndimage``, with the exact adjoint as its gradient.

The filter is one 1-D correlation per axis with a symmetric Gaussian kernel of radius
``int(truncate * sigma + 0.5)``, each over the input extended at its borders by ``mode``. As an
operator, one axis is ``C P``: ``P`` extends (pads) the axis, ``C`` correlates without further
padding. Its adjoint is ``P^T C^T``: a full convolution with the kernel, then every padded
position's value added back onto the input position it copied (for "constant", dropped). The
gradient of the whole filter applies those adjoints axis by axis in reverse order, so it is
exact for every border mode accepted: "reflect", "mirror", "nearest", "wrap" and "constant"
(zero). Others are refused with an error.

The adjoint is an op of its own, ``gaussian_filter_adjoint``, whose gradient is the filter
again: both are linear in their input, so the pair is differentiable to any order, and forward
mode (the filter of the tangent) comes from the same backward. ``sigma`` is not differentiable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

import npgrad
from npgrad.errors import InputError, MissingBackwardError

Array = np.ndarray[Any, Any]
# scipy.ndimage's border modes, as numpy.pad names them.
_MODES = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge", "wrap": "wrap"}


def _kernel(sigma: float, truncate: float) -> Array:
    radius = int(truncate * float(sigma) + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2) if sigma > 0 else (offsets == 0) * 1.0
    return weights / weights.sum()


def _sigmas(sigma: Any, ndim: int) -> list[float]:
    values = np.broadcast_to(np.asarray(sigma, dtype=float), (ndim,))
    if np.any(values < 0):
        raise InputError(
            f'npgrad op "scipy::gaussian_filter": sigma {values.tolist()} has negative values; '
            f"expected sigma >= 0, one value or one per axis"
        )
    return [float(s) for s in values]


def _sources(n: int, radius: int, mode: str) -> Array:
    """For each position of the padded axis, the input position it copies (-1: a zero)."""
    if mode == "constant":
        index = np.full(n + 2 * radius, -1)
        index[radius : radius + n] = np.arange(n)
        return index
    try:
        return np.pad(np.arange(n), radius, mode=_MODES[mode])
    except KeyError:
        raise InputError(
            f'npgrad op "scipy::gaussian_filter": mode={mode!r}; expected one of '
            f"{', '.join([*_MODES, 'constant'])}, whose gradient is the exact adjoint filter"
        ) from None


def _correlate_axis(x: Array, weights: Array, axis: int, mode: str) -> Array:
    radius = len(weights) // 2
    if radius == 0:
        return x * weights[0]
    index = _sources(x.shape[axis], radius, mode)
    padded = np.take(x, np.maximum(index, 0), axis=axis)
    if mode == "constant":
        shape = [1] * x.ndim
        shape[axis] = -1
        padded = padded * (index >= 0).reshape(shape)
    # Windows along the axis become a trailing dim, contracted with the kernel in place.
    result: Array = sliding_window_view(padded, len(weights), axis=axis) @ weights
    return result


def _adjoint_axis(g: Array, weights: Array, axis: int, mode: str, n: int) -> Array:
    radius = len(weights) // 2
    if radius == 0:
        return g * weights[0]
    # C^T: a full convolution with the (symmetric) kernel, onto the padded axis.
    widths = [(0, 0)] * g.ndim
    widths[axis] = (2 * radius, 2 * radius)
    full = sliding_window_view(np.pad(g, widths), len(weights), axis=axis) @ weights[::-1]
    # P^T: each padded position's value goes back to the input position it copied.
    index = _sources(n, radius, mode)
    keep = index >= 0
    moved = np.moveaxis(full, axis, 0)[keep]
    out = np.zeros((n, *moved.shape[1:]), dtype=full.dtype)
    np.add.at(out, index[keep], moved)
    return np.moveaxis(out, 0, axis)


@npgrad.op("scipy::gaussian_filter")
def gaussian_filter(x: Array, sigma: Any, *, mode: str = "reflect", truncate: float = 4.0) -> Array:
    """Blur ``x`` with a Gaussian of standard deviation ``sigma`` along every axis.

    Equal to ``scipy.ndimage.gaussian_filter(x, sigma, mode=mode, truncate=truncate)``.

    Args:
        x: an array of any number of dims.
        sigma: the standard deviation: a number, or an array with one per axis (not
            differentiable).
        mode: "reflect", "mirror", "nearest", "wrap" or "constant" (zeros).
        truncate: the kernel's radius, in standard deviations.

    >>> import torch
    >>> from npgrad_scipy.ndimage import gaussian_filter
    >>> gaussian_filter(torch.ones(5, 5), 1.0).shape
    torch.Size([5, 5])
    """
    out = np.asarray(x, dtype=np.result_type(x.dtype, np.float32))
    for axis, s in enumerate(_sigmas(sigma, x.ndim)):
        out = _correlate_axis(out, _kernel(s, truncate), axis, mode)
    return out


@npgrad.op("scipy::gaussian_filter_adjoint")
def gaussian_filter_adjoint(
    g: Array, sigma: Any, *, mode: str = "reflect", truncate: float = 4.0
) -> Array:
    """Apply the adjoint (transpose) of ``gaussian_filter`` to ``g``: its gradient.

    ``<gaussian_filter(x), g> == <x, gaussian_filter_adjoint(g)>`` for every ``x``, in every
    border mode accepted.

    Examples:
        >>> import torch
        >>> from npgrad_scipy.ndimage import gaussian_filter_adjoint
        >>> gaussian_filter_adjoint(torch.ones(4, 4), 1.0, mode="constant").shape
        torch.Size([4, 4])
    """
    sigmas = _sigmas(sigma, g.ndim)
    out = np.asarray(g, dtype=np.result_type(g.dtype, np.float32))
    for axis in reversed(range(g.ndim)):
        out = _adjoint_axis(out, _kernel(sigmas[axis], truncate), axis, mode, g.shape[axis])
    return out


def _fixed_sigma(name: str, asked: bool) -> None:
    if asked:
        raise MissingBackwardError(
            f'npgrad op "scipy::{name}": a gradient was asked for input "sigma" (position 1), '
            f"which the op does not differentiate; pass sigma as a number or a tensor that does "
            f"not require grad"
        )


@gaussian_filter.tensor_backward
def _(
    grad: torch.Tensor,
    x: torch.Tensor,
    sigma: Any,
    *,
    mode: str = "reflect",
    truncate: float = 4.0,
    needs_input_grad: tuple[bool, ...],
) -> tuple[torch.Tensor, None]:
    _fixed_sigma("gaussian_filter", needs_input_grad[1])
    return gaussian_filter_adjoint(grad, sigma, mode=mode, truncate=truncate), None


@gaussian_filter_adjoint.tensor_backward
def _(
    grad: torch.Tensor,
    g: torch.Tensor,
    sigma: Any,
    *,
    mode: str = "reflect",
    truncate: float = 4.0,
    needs_input_grad: tuple[bool, ...],
) -> tuple[torch.Tensor, None]:
    _fixed_sigma("gaussian_filter_adjoint", needs_input_grad[1])
    return gaussian_filter(grad, sigma, mode=mode, truncate=truncate), None


@gaussian_filter_adjoint.shape
def _(g: tuple[int, ...], sigma: Any, *, mode: str = "reflect", truncate: float = 4.0) -> Any:
    return g


@gaussian_filter.shape
def _(x: tuple[int, ...], sigma: Any, *, mode: str = "reflect", truncate: float = 4.0) -> Any:
    return x


for _mode in ("reflect", "mirror", "nearest", "wrap", "constant"):
    gaussian_filter.example(
        lambda mode=_mode: ((torch.randn(6, 7), 1.2), {"mode": mode, "truncate": 3.0})
    )
    gaussian_filter_adjoint.example(
        lambda mode=_mode: ((torch.randn(5, 4), 0.8), {"mode": mode, "truncate": 3.0})
    )
