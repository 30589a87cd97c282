"""Special functions from ``scipy.special`` as differentiable ops, elementwise and broadcasting.

Each op (registered as ``scipy::<name>``) equals SciPy's function, refuses inputs outside its
real domain with an ``npgrad.errors.InputError`` naming the input and quoting a value, and has
a backward written with ops (the same special functions again, and torch's), so it is
differentiable to any order, and in forward mode through that backward's transpose:

| op | domain | derivative |
| --- | --- | --- |
| ``kv(v, x)`` | x > 0 | d/dx K_v(x) = -(K_{v-1}(x) + K_{v+1}(x)) / 2 |
| ``iv(v, x)`` | x >= 0; any x for an integer v | d/dx I_v(x) = (I_{v-1}(x) + I_{v+1}(x)) / 2 |
| ``ellipk(m)`` | m < 1 | (E(m) - (1 - m) K(m)) / (2 m (1 - m)); its series for abs(m) < 1e-3 |
| ``ellipe(m)`` | m <= 1 | (E(m) - K(m)) / (2 m); its series for abs(m) < 1e-3 |
| ``lambertw(x)`` | x >= -1/e | 1 / (x + e^W(x)) (principal real branch; +inf at -1/e) |
| ``gammaincc(a, x)`` | a > 0, x >= 0; a = 0, x > 0 | d/dx Q(a, x) = -x^(a-1) e^(-x) / Gamma(a) |

The order ``v`` of ``kv``/``iv`` and the parameter ``a`` of ``gammaincc`` are not
differentiable: asking for their gradient, or forward mode with a tangent in them, raises an
error naming the input.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import special

import npgrad
from npgrad.errors import InputError, MissingBackwardError

Array = np.ndarray[Any, Any]
ELEMENTWISE = {"signature": "(),()->()", "vectorized": True}
UNARY = {"signature": "()->()", "vectorized": True}
# Below this size of m, the elliptic integrals' derivatives come from their series: the closed
# forms cancel (about eps / m of relative error).
_SERIES = 1e-3


def _domain(name: str, input: str, ok: Any, what: str, values: Any) -> None:
    if not np.all(ok):
        values = np.broadcast_to(values, np.shape(ok))
        bad = values[~np.broadcast_to(ok, values.shape)]
        raise InputError(
            f'npgrad op "scipy::{name}": input "{input}" has {bad.size} value(s) outside the '
            f"real domain {what} (e.g. {bad.flat[0].item()!r}); expected {what}; clamp or mask the "
            f"inputs"
        )


def _fixed(name: str, input: str, asked: bool) -> None:
    # The derivative in an order (or parameter) has no closed form here: a gradient or a
    # tangent for it must be an error, never a silent zero.
    if asked:
        raise MissingBackwardError(
            f'npgrad op "scipy::{name}": a gradient was asked for input "{input}" (position 0), '
            f"which the op does not differentiate (only its last input); pass it as a constant "
            f"(a number, or a tensor that does not require grad)"
        )


@npgrad.op("scipy::kv", **ELEMENTWISE)
def kv(v: Array, x: Array) -> Array:
    """Modified Bessel function of the second kind, K_v(x), for x > 0.

    Examples:
        >>> import torch
        >>> from npgrad_scipy.special import kv
        >>> kv(torch.tensor(0.5), torch.tensor([1.0, 2.0])).shape
        torch.Size([2])
    """
    _domain("kv", "x", x > 0, "x > 0", x)
    return special.kv(v, x)


@kv.tensor_backward
def _(
    grad: torch.Tensor, v: Any, x: torch.Tensor, *, needs_input_grad: tuple[bool, ...]
) -> tuple[None, torch.Tensor]:
    _fixed("kv", "v", needs_input_grad[0])
    return None, -grad * (kv(v - 1, x) + kv(v + 1, x)) / 2


@npgrad.op("scipy::iv", **ELEMENTWISE)
def iv(v: Array, x: Array) -> Array:
    """Modified Bessel function of the first kind, I_v(x), for x >= 0 (any x for an integer v).

    Examples:
        >>> import torch
        >>> from npgrad_scipy.special import iv
        >>> iv(torch.tensor(1.0), torch.tensor([0.5])).shape
        torch.Size([1])
    """
    # I_v(-x) = (-1)^v I_v(x) for an integer v; otherwise I_v is complex for x < 0.
    _domain("iv", "x", (x >= 0) | (np.floor(v) == v), "x >= 0, or an integer order v", x)
    return special.iv(v, x)


@iv.tensor_backward
def _(
    grad: torch.Tensor, v: Any, x: torch.Tensor, *, needs_input_grad: tuple[bool, ...]
) -> tuple[None, torch.Tensor]:
    _fixed("iv", "v", needs_input_grad[0])
    return None, grad * (iv(v - 1, x) + iv(v + 1, x)) / 2


# The Maclaurin coefficients of K(m) and E(m) over pi/2: K = pi/2 sum k_n m^n, E likewise.
_K_SERIES = [1.0, 1 / 4, 9 / 64, 25 / 256, 1225 / 16384, 3969 / 65536, 53361 / 1048576]
_E_SERIES = [c / (1 - 2 * n) for n, c in enumerate(_K_SERIES)]


def _series_slope(coefficients: list[float], m: torch.Tensor) -> torch.Tensor:
    slope = torch.zeros_like(m)
    for n in reversed(range(1, len(coefficients))):
        slope = slope * m + n * coefficients[n]
    return math.pi / 2 * slope


def _ellipk_slope(m: torch.Tensor) -> torch.Tensor:
    small = m.abs() < _SERIES
    # The closed form where it is accurate; elsewhere a harmless value, so that neither branch
    # of the where carries a NaN into the gradient.
    safe = torch.where(small, torch.full_like(m, 0.5), m)
    closed = (ellipe(safe) - (1 - safe) * ellipk(safe)) / (2 * safe * (1 - safe))
    return torch.where(small, _series_slope(_K_SERIES, m), closed)


def _ellipe_slope(m: torch.Tensor) -> torch.Tensor:
    small = m.abs() < _SERIES
    safe = torch.where(small, torch.full_like(m, 0.5), m)
    closed = (ellipe(safe) - ellipk(safe)) / (2 * safe)
    return torch.where(small, _series_slope(_E_SERIES, m), closed)


@npgrad.op("scipy::ellipk", **UNARY)
def ellipk(m: Array) -> Array:
    """Complete elliptic integral of the first kind, K(m), for m < 1.

    Examples:
        >>> import torch
        >>> from npgrad_scipy.special import ellipk
        >>> float(ellipk(torch.tensor(0.0)))  # pi / 2
        1.5707963705062866
    """
    _domain("ellipk", "m", m < 1, "m < 1", m)
    return special.ellipk(m)


@ellipk.tensor_backward
def _(grad: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return grad * _ellipk_slope(m)


@npgrad.op("scipy::ellipe", **UNARY)
def ellipe(m: Array) -> Array:
    """Complete elliptic integral of the second kind, E(m), for m <= 1.

    Examples:
        >>> import torch
        >>> from npgrad_scipy.special import ellipe
        >>> float(ellipe(torch.tensor(1.0)))
        1.0
    """
    _domain("ellipe", "m", m <= 1, "m <= 1", m)
    return special.ellipe(m)


@ellipe.tensor_backward
def _(grad: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return grad * _ellipe_slope(m)


_BRANCH_POINT = -1 / np.e


@npgrad.op("scipy::lambertw", **UNARY)
def lambertw(x: Array) -> Array:
    """Lambert W function, principal real branch, for x >= -1/e.

    Examples:
        >>> import torch
        >>> from npgrad_scipy.special import lambertw
        >>> round(float(lambertw(torch.tensor(1.0))), 6)  # the omega constant
        0.567143
    """
    _domain("lambertw", "x", x >= _BRANCH_POINT, "x >= -1/e", x)
    with np.errstate(invalid="ignore"):
        w = special.lambertw(x).real
    # -1/e rounded to a float falls just outside SciPy's domain (it gives NaN): the branch
    # point, where W = -1.
    return np.where(x == _BRANCH_POINT, -1.0, w)


@lambertw.tensor_backward
def _(grad: torch.Tensor, x: torch.Tensor, *, outputs: torch.Tensor) -> torch.Tensor:
    # W' = W / (x (1 + W)) = 1 / (x + e^W): no 0/0 at x = 0, +inf at the branch point.
    return grad / (x + torch.exp(outputs))


@npgrad.op("scipy::gammaincc", **ELEMENTWISE)
def gammaincc(a: Array, x: Array) -> Array:
    """Regularised upper incomplete gamma function Q(a, x), for a > 0 and x >= 0 (or a = 0).

    Examples:
        >>> import torch
        >>> from npgrad_scipy.special import gammaincc
        >>> float(gammaincc(torch.tensor(1.0), torch.tensor(0.0)))
        1.0
    """
    ok = ((a > 0) & (x >= 0)) | ((a == 0) & (x > 0))
    a_values, x_values = np.broadcast_arrays(a, x)
    _domain("gammaincc", "a", ok | (a_values > 0), "a >= 0 (a = 0 with x > 0)", a_values)
    _domain("gammaincc", "x", ok, "x >= 0 (x > 0 where a = 0)", x_values)
    return special.gammaincc(a, x)


@gammaincc.tensor_backward
def _(
    grad: torch.Tensor, a: Any, x: torch.Tensor, *, needs_input_grad: tuple[bool, ...]
) -> tuple[None, torch.Tensor]:
    _fixed("gammaincc", "a", needs_input_grad[0])
    a = torch.as_tensor(a, dtype=x.dtype, device=x.device)
    # -x^(a-1) e^(-x) / Gamma(a), with x^(a-1) at x = 0 taken as its limit (0, 1 or inf).
    return None, -grad * torch.exp(torch.xlogy(a - 1, x) - x - torch.lgamma(a))


def _examples() -> None:
    def positive(*shape: int) -> torch.Tensor:
        return torch.rand(*shape) + 0.5

    # The orders as numbers: constants, not differentiable inputs.
    kv.example(lambda: ((0.7, positive(5)), {}))
    iv.example(lambda: ((1.3, positive(5)), {}))
    ellipk.example(lambda: ((torch.rand(5) * 1.6 - 0.8,), {}))
    ellipe.example(lambda: ((torch.rand(5) * 1.6 - 0.8,), {}))
    lambertw.example(lambda: ((torch.rand(5) * 3 - 0.3,), {}))
    gammaincc.example(lambda: ((2.5, positive(5)), {}))


_examples()
