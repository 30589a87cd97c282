"""Special functions from ``scipy.special`` as differentiable ops, elementwise and broadcasting.

Each op (registered as ``scipy::<name>``) equals SciPy's function, refuses inputs outside its
real domain with an ``npgrad.errors.InputError``, and has a closed-form derivative (backward
and jvp):

| op | domain | derivative |
| --- | --- | --- |
| ``kv(v, x)`` | x > 0 | d/dx K_v(x) = -(K_{v-1}(x) + K_{v+1}(x)) / 2 |
| ``iv(v, x)`` | x >= 0 | d/dx I_v(x) = (I_{v-1}(x) + I_{v+1}(x)) / 2 |
| ``ellipk(m)`` | m < 1 | (E(m) - (1 - m) K(m)) / (2 m (1 - m)); pi/8 at m = 0 |
| ``ellipe(m)`` | m <= 1 | (E(m) - K(m)) / (2 m); -pi/8 at m = 0 |
| ``lambertw(x)`` | x >= -1/e | W(x) / (x (1 + W(x))); 1 at x = 0 (principal real branch) |
| ``gammaincc(a, x)`` | a > 0, x >= 0 | d/dx Q(a, x) = -x^(a-1) e^(-x) / Gamma(a) |

The order ``v`` of ``kv``/``iv`` and the parameter ``a`` of ``gammaincc`` are not
differentiable: asking for their gradient raises an error naming the input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import special

import npgrad
from npgrad.errors import InputError, MissingBackwardError

Array = np.ndarray[Any, Any]
ELEMENTWISE = {"signature": "(),()->()", "vectorized": True}


def _no_tangent(name: str, input: str, tangent: Array) -> None:
    # The derivative in the order (or parameter) has no closed form here: a tangent in it must
    # be an error, never a silent zero.
    if np.any(tangent != 0):
        raise MissingBackwardError(
            f'npgrad op "scipy::{name}": forward mode was asked with a tangent in input '
            f'"{input}", whose derivative the op does not give; expected a zero tangent there '
            f"(only the last input is differentiable)"
        )


def _domain(name: str, ok: Any, what: str, values: Array) -> None:
    if not np.all(ok):
        bad = np.asarray(values)[~np.broadcast_to(ok, np.shape(values))]
        raise InputError(
            f'npgrad op "scipy::{name}": got {bad.size} value(s) outside the real domain '
            f"{what} (e.g. {bad.flat[0]!r}); expected {what}; clamp or mask the inputs"
        )


@npgrad.op("scipy::kv", **ELEMENTWISE)
def kv(v: Array, x: Array) -> Array:
    """Modified Bessel function of the second kind, K_v(x), for x > 0.

    >>> import torch
    >>> from npgrad_scipy.special import kv
    >>> kv(torch.tensor(0.5), torch.tensor([1.0, 2.0])).shape
    torch.Size([2])
    """
    _domain("kv", x > 0, "x > 0", x)
    return special.kv(v, x)


@kv.vjp("x")
def _(grad: Array, v: Array, x: Array) -> Array:
    return -grad * (special.kv(v - 1, x) + special.kv(v + 1, x)) / 2


@kv.jvp
def _(tv: Array, tx: Array, v: Array, x: Array) -> Array:
    _no_tangent("kv", "v", tv)
    return -tx * (special.kv(v - 1, x) + special.kv(v + 1, x)) / 2


@npgrad.op("scipy::iv", **ELEMENTWISE)
def iv(v: Array, x: Array) -> Array:
    """Modified Bessel function of the first kind, I_v(x), for x >= 0.

    >>> import torch
    >>> from npgrad_scipy.special import iv
    >>> iv(torch.tensor(1.0), torch.tensor([0.5])).shape
    torch.Size([1])
    """
    _domain("iv", x >= 0, "x >= 0", x)
    return special.iv(v, x)


@iv.vjp("x")
def _(grad: Array, v: Array, x: Array) -> Array:
    return grad * (special.iv(v - 1, x) + special.iv(v + 1, x)) / 2


@iv.jvp
def _(tv: Array, tx: Array, v: Array, x: Array) -> Array:
    _no_tangent("iv", "v", tv)
    return tx * (special.iv(v - 1, x) + special.iv(v + 1, x)) / 2


def _ellipk_derivative(m: Array) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (special.ellipe(m) - (1 - m) * special.ellipk(m)) / (2 * m * (1 - m))
    return np.where(m == 0, np.pi / 8, d)


def _ellipe_derivative(m: Array) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (special.ellipe(m) - special.ellipk(m)) / (2 * m)
    return np.where(m == 0, -np.pi / 8, d)


@npgrad.op("scipy::ellipk", signature="()->()", vectorized=True)
def ellipk(m: Array) -> Array:
    """Complete elliptic integral of the first kind, K(m), for m < 1.

    >>> import torch
    >>> from npgrad_scipy.special import ellipk
    >>> float(ellipk(torch.tensor(0.0)))  # pi / 2
    1.5707963705062866
    """
    _domain("ellipk", m < 1, "m < 1", m)
    return special.ellipk(m)


@ellipk.backward
def _(grad: Array, m: Array) -> Array:
    return grad * _ellipk_derivative(m)


@ellipk.jvp
def _(tm: Array, m: Array) -> Array:
    return tm * _ellipk_derivative(m)


@npgrad.op("scipy::ellipe", signature="()->()", vectorized=True)
def ellipe(m: Array) -> Array:
    """Complete elliptic integral of the second kind, E(m), for m <= 1.

    >>> import torch
    >>> from npgrad_scipy.special import ellipe
    >>> float(ellipe(torch.tensor(1.0)))
    1.0
    """
    _domain("ellipe", m <= 1, "m <= 1", m)
    return special.ellipe(m)


@ellipe.backward
def _(grad: Array, m: Array) -> Array:
    return grad * _ellipe_derivative(m)


@ellipe.jvp
def _(tm: Array, m: Array) -> Array:
    return tm * _ellipe_derivative(m)


def _lambertw_derivative(x: Array, w: Array) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        d = w / (x * (1 + w))
    return np.where(x == 0, 1.0, d)


@npgrad.op("scipy::lambertw", signature="()->()", vectorized=True)
def lambertw(x: Array) -> Array:
    """Lambert W function, principal real branch, for x >= -1/e.

    >>> import torch
    >>> from npgrad_scipy.special import lambertw
    >>> round(float(lambertw(torch.tensor(1.0))), 6)  # the omega constant
    0.567143
    """
    _domain("lambertw", x >= -1 / np.e, "x >= -1/e", x)
    return special.lambertw(x).real


@lambertw.backward
def _(grad: Array, x: Array, *, outputs: Array) -> Array:
    return grad * _lambertw_derivative(x, outputs)


@lambertw.jvp
def _(tx: Array, x: Array) -> Array:
    return tx * _lambertw_derivative(x, special.lambertw(x).real)


@npgrad.op("scipy::gammaincc", **ELEMENTWISE)
def gammaincc(a: Array, x: Array) -> Array:
    """Regularised upper incomplete gamma function Q(a, x), for a > 0 and x >= 0.

    >>> import torch
    >>> from npgrad_scipy.special import gammaincc
    >>> float(gammaincc(torch.tensor(1.0), torch.tensor(0.0)))
    1.0
    """
    _domain("gammaincc", (a > 0) & (x >= 0), "a > 0 and x >= 0", np.broadcast_arrays(a, x)[1])
    return special.gammaincc(a, x)


def _gammaincc_derivative(a: Array, x: Array) -> Array:
    return -np.exp((a - 1) * np.log(x) - x - special.gammaln(a))


@gammaincc.vjp("x")
def _(grad: Array, a: Array, x: Array) -> Array:
    return grad * _gammaincc_derivative(a, x)


@gammaincc.jvp
def _(ta: Array, tx: Array, a: Array, x: Array) -> Array:
    _no_tangent("gammaincc", "a", ta)
    return tx * _gammaincc_derivative(a, x)


def _examples() -> None:
    def positive(*shape: int) -> torch.Tensor:
        return torch.rand(*shape) + 0.5

    kv.example(lambda: ((torch.tensor(0.7), positive(5)), {}))
    iv.example(lambda: ((torch.tensor(1.3), positive(5)), {}))
    ellipk.example(lambda: ((torch.rand(5) * 1.6 - 0.8,), {}))
    ellipe.example(lambda: ((torch.rand(5) * 1.6 - 0.8,), {}))
    lambertw.example(lambda: ((torch.rand(5) * 3 - 0.3,), {}))
    gammaincc.example(lambda: ((torch.tensor(2.5), positive(5)), {}))


_examples()
