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
from npgrad.errors import InputError

Array = np.ndarray[Any, Any]
# scipy.ndimage's border modes, as numpy.pad names them.
_MODES = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge", "wrap": "wrap"}


def _kernel(sigma: float, order: int, radius: int) -> Array:
    """Return the correlation weights of SciPy's 1-D Gaussian (derivative) filter.

    As ``scipy.ndimage.gaussian_filter1d``: the normalised Gaussian times the polynomial of
    its ``order``-th derivative, reversed (SciPy convolves with it).
    """
    x = np.arange(-radius, radius + 1)
    if sigma <= 0:
        return (x == 0) * 1.0
    phi = np.exp(-0.5 * (x / sigma) ** 2)
    phi = phi / phi.sum()
    if order == 0:
        return phi
    # q holds the coefficients of the polynomial p with d^n/dx^n phi = p(x) phi(x).
    q = np.zeros(order + 1)
    q[0] = 1
    derivative = np.diag(np.arange(1, order + 1), 1) + np.diag(np.full(order, -1 / sigma**2), -1)
    for _ in range(order):
        q = derivative @ q
    weights: Array = ((x[:, None] ** np.arange(order + 1)) @ q * phi)[::-1]
    return weights


def _plan(
    name: str,
    ndim: int,
    sigma: Any,
    order: Any,
    mode: Any,
    truncate: float,
    radius: Any,
    axes: Any,
) -> list[tuple[int, Array, str]]:
    """Return (axis, weights, mode) for each axis SciPy's gaussian_filter filters, in order."""
    if axes is None:
        chosen = list(range(ndim))
    else:
        chosen = [int(a) for a in np.atleast_1d(axes)]
        if any(not -ndim <= a < ndim for a in chosen) or len(set(a % ndim for a in chosen)) != len(
            chosen
        ):
            raise InputError(
                f'npgrad op "scipy::{name}": axes={axes!r}; expected distinct axes of an array '
                f"with {ndim} dims"
            )
        chosen = [a % ndim for a in chosen]
    count = len(chosen)

    def per_axis(value: Any, what: str, kind: type) -> list[Any]:
        if isinstance(value, (str, int, float, np.number)) or np.ndim(value) == 0:
            return [kind(value) if kind is not str else value] * count
        values = list(value) if not isinstance(value, np.ndarray) else value.tolist()
        if len(values) != count:
            raise InputError(
                f'npgrad op "scipy::{name}": {what} has {len(values)} values for {count} axes; '
                f"expected one value, or one per axis filtered"
            )
        return [kind(v) if kind is not str else v for v in values]

    sigmas = per_axis(sigma, "sigma", float)
    if any(s < 0 for s in sigmas):
        raise InputError(
            f'npgrad op "scipy::{name}": sigma {sigmas} has negative values; expected sigma >= '
            f"0, one value or one per axis"
        )
    orders = per_axis(order, "order", int)
    if any(o < 0 for o in orders):
        raise InputError(
            f'npgrad op "scipy::{name}": order {orders} has negative values; expected 0 (the '
            f"Gaussian) or a derivative order n >= 1 per axis"
        )
    modes = per_axis(mode, "mode", str)
    for m in modes:
        if m not in (*_MODES, "constant"):
            raise InputError(
                f'npgrad op "scipy::{name}": mode={m!r}; expected one of '
                f"{', '.join([*_MODES, 'constant'])}, whose gradient is the exact adjoint filter"
            )
    radii = (
        [int(truncate * s + 0.5) for s in sigmas]
        if radius is None
        else per_axis(radius, "radius", int)
    )
    # As SciPy: an axis of (nearly) zero sigma is left alone, whatever its order.
    return [
        (axis, _kernel(s, o, r), m)
        for axis, s, o, m, r in zip(chosen, sigmas, orders, modes, radii, strict=True)
        if s > 1e-15
    ]


def _sources(n: int, radius: int, mode: str) -> Array:
    """For each position of the padded axis, the input position it copies (-1: cval)."""
    if mode == "constant":
        index = np.full(n + 2 * radius, -1)
        index[radius : radius + n] = np.arange(n)
        return index
    return np.pad(np.arange(n), radius, mode=_MODES[mode])


def _correlate_axis(x: Array, weights: Array, axis: int, mode: str, cval: float) -> Array:
    radius = len(weights) // 2
    if radius == 0:
        return x * weights[0]
    index = _sources(x.shape[axis], radius, mode)
    padded = np.take(x, np.maximum(index, 0), axis=axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    if mode == "constant":
        padded = padded * (index >= 0).reshape(shape)
    # Windows along the axis become a trailing dim, contracted with the kernel in place.
    result: Array = sliding_window_view(padded, len(weights), axis=axis) @ weights
    if mode == "constant" and cval:
        # The padding's share: constant in x, so the filter stays affine and its gradient the
        # adjoint of the linear part.
        outside = sliding_window_view((index < 0) * 1.0, len(weights)) @ weights
        result = result + cval * outside.reshape(shape)
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


@npgrad.op("scipy::gaussian_filter", nondifferentiable=("sigma", "order"))
def gaussian_filter(
    x: Array,
    sigma: Any,
    order: Any = 0,
    *,
    mode: Any = "reflect",
    cval: float = 0.0,
    truncate: float = 4.0,
    radius: Any = None,
    axes: Any = None,
) -> Array:
    """Blur ``x`` with a Gaussian of standard deviation ``sigma`` (or filter with a derivative).

    Equal to ``scipy.ndimage.gaussian_filter(x, sigma, order, mode=mode, cval=cval,
    truncate=truncate, radius=radius, axes=axes)``.

    Args:
        x: an array of any number of dims.
        sigma: the standard deviation: a number, or a sequence with one per axis filtered (not
            differentiable).
        order: 0 for the Gaussian, n for its n-th derivative; one, or one per axis (not
            differentiable).
        mode: "reflect", "mirror", "nearest", "wrap" or "constant"; one, or one per axis.
        cval: the value beyond the borders in "constant" mode.
        truncate: the kernel's radius, in standard deviations.
        radius: the kernel's radius in elements, instead of ``truncate``; one, or one per axis.
        axes: the axes to filter (default: all).

    Examples:
        >>> import torch
        >>> from npgrad_scipy.ndimage import gaussian_filter
        >>> gaussian_filter(torch.ones(5, 5), sigma=1.0).shape
        torch.Size([5, 5])
    """
    out = np.asarray(x, dtype=np.result_type(x.dtype, np.float32))
    if out.size == 0:
        return out.copy()
    plan = _plan("gaussian_filter", x.ndim, sigma, order, mode, truncate, radius, axes)
    for axis, weights, axis_mode in plan:
        out = _correlate_axis(out, weights, axis, axis_mode, cval)
    return out


@npgrad.op("scipy::gaussian_filter_adjoint", nondifferentiable=("sigma", "order"))
def gaussian_filter_adjoint(
    g: Array,
    sigma: Any,
    order: Any = 0,
    *,
    mode: Any = "reflect",
    cval: float = 0.0,
    truncate: float = 4.0,
    radius: Any = None,
    axes: Any = None,
) -> Array:
    """Apply the adjoint (transpose) of ``gaussian_filter`` to ``g``: its gradient.

    ``<gaussian_filter(x) - gaussian_filter(0), g> == <x, gaussian_filter_adjoint(g)>`` for
    every ``x``, in every border mode accepted, with the same arguments (``cval`` only moves the
    filter by a constant, so the adjoint ignores it).

    Examples:
        >>> import torch
        >>> from npgrad_scipy.ndimage import gaussian_filter_adjoint
        >>> gaussian_filter_adjoint(torch.ones(4, 4), 1.0, mode="constant").shape
        torch.Size([4, 4])
    """
    out = np.asarray(g, dtype=np.result_type(g.dtype, np.float32))
    if out.size == 0:
        return out.copy()
    plan = _plan("gaussian_filter_adjoint", g.ndim, sigma, order, mode, truncate, radius, axes)
    for axis, weights, axis_mode in reversed(plan):
        out = _adjoint_axis(out, weights, axis, axis_mode, g.shape[axis])
    return out


@gaussian_filter.tensor_backward
def _(
    grad: torch.Tensor, x: torch.Tensor, sigma: Any, order: Any = 0, **config: Any
) -> tuple[torch.Tensor, None, None]:
    config.pop("cval", None)
    return gaussian_filter_adjoint(grad, sigma, order, **config), None, None


@gaussian_filter_adjoint.tensor_backward
def _(
    grad: torch.Tensor, g: torch.Tensor, sigma: Any, order: Any = 0, **config: Any
) -> tuple[torch.Tensor, None, None]:
    config.pop("cval", None)
    return gaussian_filter(grad, sigma, order, **config), None, None


def _same_shape(x: tuple[int, ...], *_: Any, **__: Any) -> tuple[int, ...]:
    return x


gaussian_filter.shape(_same_shape)
gaussian_filter_adjoint.shape(_same_shape)


for _mode in ("reflect", "mirror", "nearest", "wrap", "constant"):
    gaussian_filter.example(
        lambda mode=_mode: ((torch.randn(6, 7), 1.2), {"mode": mode, "truncate": 3.0})
    )
    gaussian_filter_adjoint.example(
        lambda mode=_mode: ((torch.randn(5, 4), 0.8), {"mode": mode, "truncate": 3.0})
    )
# SciPy's other arguments: per-axis sigma and derivative orders, cval, radius, axes.
gaussian_filter.example(
    lambda: (
        (torch.randn(5, 6, 4), (0.8, 1.5), (1, 0)),
        {"axes": (0, 2), "mode": "constant", "cval": 0.5, "radius": (2, 3)},
    )
)
