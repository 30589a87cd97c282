"""``lfilter`` from ``scipy.signal``: IIR filtering with gradients for b, a and x.

With ``A y = B x`` (zero initial conditions, ``a[0]`` included) along ``axis``:

- ``dL/dx`` is the adjoint filter: the output gradient filtered by ``B/A`` backwards in time;
- with ``u`` the output gradient filtered by ``1/A`` backwards in time,
  ``dL/db[k] = sum_n u[n] x[n-k]`` and ``dL/da[k] = -sum_n u[n] y[n-k]`` (``y`` is the saved
  output), summed over every other dim of the batch.

Each of these is one ``lfilter`` call (the op again) plus one dot product per coefficient, so
a long signal costs a few passes over it; written with the op and torch ops, the backward is
differentiable again, to any order, and gives forward mode by its transpose.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.signal
import torch

import npgrad
from npgrad.errors import InputError
from npgrad_scipy.conv import convolve_nd as convolve
from npgrad_scipy.conv import correlate_nd as correlate

__all__ = ["convolve", "correlate", "lfilter"]

Array = np.ndarray[Any, Any]


def _check(b: Array, a: Array) -> None:
    if b.ndim != 1 or a.ndim != 1 or a.size == 0 or b.size == 0:
        raise InputError(
            f'npgrad op "scipy::lfilter": got b of shape {b.shape} and a of shape {a.shape}; '
            f"expected two non-empty 1-D coefficient vectors"
        )
    if a[0] == 0:
        raise InputError(
            'npgrad op "scipy::lfilter": a[0] is 0; expected a non-zero leading denominator '
            "coefficient (the filter is normalised by it)"
        )


@npgrad.op("scipy::lfilter")
def lfilter(b: Array, a: Array, x: Array, *, axis: int = -1) -> Array:
    """Filter ``x`` along ``axis`` with the IIR filter ``b / a``, as ``scipy.signal.lfilter``.

    Args:
        b: numerator coefficients, 1-D.
        a: denominator coefficients, 1-D, ``a[0] != 0``.
        x: the signal(s); every other dim is a batch dim.
        axis: the time axis.

    Examples:
        >>> import torch
        >>> from npgrad_scipy.signal import lfilter
        >>> lfilter(torch.tensor([1.0]), torch.tensor([1.0, -0.5]), torch.ones(4))
        tensor([1.0000, 1.5000, 1.7500, 1.8750])
    """
    _check(b, a)
    return scipy.signal.lfilter(b, a, x, axis=axis)


@lfilter.tensor_backward
def _(
    grad: torch.Tensor,
    b: torch.Tensor,
    a: torch.Tensor,
    x: torch.Tensor,
    *,
    axis: int = -1,
    needs_input_grad: tuple[bool, ...],
    outputs: torch.Tensor,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    # The filter is holomorphic in b, a and x: torch's gradient is this formula with every
    # value conjugated (a no-op for real tensors).
    b, a, x, outputs = b.conj(), a.conj(), x.conj(), outputs.conj()
    # Time reversed, along the last axis: the adjoint of a causal filter runs backwards.
    g = grad.movedim(axis, -1).flip(-1)
    grad_x = grad_b = grad_a = None
    if needs_input_grad[2]:
        grad_x = lfilter(b, a, g).flip(-1).movedim(-1, axis)
    if needs_input_grad[0] or needs_input_grad[1]:
        u = lfilter(torch.ones_like(a[:1]), a, g).flip(-1)
        if needs_input_grad[0]:
            grad_b = _lagged_dots(u, x.movedim(axis, -1), b.shape[0])
        if needs_input_grad[1]:
            grad_a = -_lagged_dots(u, outputs.movedim(axis, -1), a.shape[0])
    return grad_b, grad_a, grad_x


def _lagged_dots(u: torch.Tensor, signal: torch.Tensor, count: int) -> torch.Tensor:
    """Return ``sum over batch and n of u[..., n] * signal[..., n - k]`` for k < count."""
    n = u.shape[-1]
    dots = [
        (u[..., k:] * signal[..., : n - k]).sum() if k < n else u.new_zeros(())
        for k in range(count)
    ]
    return torch.stack(dots)


@lfilter.shape
def _(b: tuple[int, ...], a: tuple[int, ...], x: tuple[int, ...], *, axis: int = -1) -> Any:
    return x


@lfilter.example
def _() -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (torch.tensor([0.5, 0.2, 0.1]), torch.tensor([1.0, -0.4, 0.1]), torch.randn(2, 30)), {}


@lfilter.example
def _() -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (torch.tensor([0.3, 0.3]), torch.tensor([1.2, -0.5]), torch.randn(25, 3)), {"axis": 0}
