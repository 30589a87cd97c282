"""Special functions from ``scipy.special`` as differentiable ops, elementwise and broadcasting.

Each op (registered as ``scipy::<name>``) equals SciPy's function, refuses inputs outside its
real domain with an ``npgrad.errors.InputError`` naming the input and quoting a value, and has
a backward written with ops (the same special functions again, and torch's), so it is
differentiable to any order, and in forward mode through that backward's transpose:

| op | domain | derivative |
| --- | --- | --- |
| ``kv(v, x)`` | x > 0; complex x != 0 | d/dx K_v(x) = -(K_{v-1}(x) + K_{v+1}(x)) / 2 |
| ``iv(v, x)`` | x >= 0; integer v: any x; complex x | d/dx I_v = (I_{v-1} + I_{v+1}) / 2 |
| ``ellipk(m)`` | m < 1 | (E(m) - (1 - m) K(m)) / (2 m (1 - m)); its series for abs(m) < 1e-3 |
| ``ellipe(m)`` | m <= 1 | (E(m) - K(m)) / (2 m); its series for abs(m) < 1e-3 |
| ``lambertw(x, k=0)`` | x >= -1/e; complex x, branch k | 1 / (x + e^W(x)) (+inf at -1/e) |
| ``gammaincc(a, x)`` | a > 0, x >= 0; a = 0, x > 0 | d/dx Q(a, x) = -x^(a-1) e^(-x) / Gamma(a) |
| | | d/da Q(a, x) = N_1 - psi(a) N_0 (``gammaincc_moment``: quadrature; a > 0) |

The order ``v`` of ``kv``/``iv`` is not differentiable: asking for its gradient, or forward
mode with a tangent in it, raises an error naming the input. For complex arguments the
functions are holomorphic in x: a backward multiplies the output gradient by the conjugate
derivative, torch's convention.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import integrate, special

import npgrad
from npgrad.errors import InputError

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


@npgrad.op("scipy::kv", **ELEMENTWISE, nondifferentiable=("v",))
def kv(v: Array, x: Array) -> Array:
    """Modified Bessel function of the second kind, K_v(x), for x > 0.

    Examples:
        >>> import torch
        >>> from npgrad_scipy.special import kv
        >>> kv(torch.tensor(0.5), torch.tensor([1.0, 2.0])).shape
        torch.Size([2])
    """
    if np.iscomplexobj(x):
        # Complex x: the principal branch, as SciPy's, everywhere but at 0.
        _domain("kv", "x", x != 0, "x != 0 (complex x)", x)
    else:
        _domain("kv", "x", x > 0, "x > 0", x)
    return special.kv(v, x)


@kv.tensor_backward
def _(grad: torch.Tensor, v: Any, x: torch.Tensor) -> tuple[None, torch.Tensor]:
    # Holomorphic in x: the gradient takes the conjugate derivative (real x: the derivative).
    return None, -grad * (kv(v - 1, x) + kv(v + 1, x)).conj() / 2


@npgrad.op("scipy::iv", **ELEMENTWISE, nondifferentiable=("v",))
def iv(v: Array, x: Array) -> Array:
    """Modified Bessel function of the first kind, I_v(x), for x >= 0 (any x for an integer v).

    Examples:
        >>> import torch
        >>> from npgrad_scipy.special import iv
        >>> iv(torch.tensor(1.0), torch.tensor([0.5])).shape
        torch.Size([1])
    """
    if not np.iscomplexobj(x):
        # I_v(-x) = (-1)^v I_v(x) for an integer v; otherwise I_v is complex for x < 0: pass a
        # complex x for it.
        _domain("iv", "x", (x >= 0) | (np.floor(v) == v), "x >= 0, or an integer order v", x)
    return special.iv(v, x)


@iv.tensor_backward
def _(grad: torch.Tensor, v: Any, x: torch.Tensor) -> tuple[None, torch.Tensor]:
    return None, grad * (iv(v - 1, x) + iv(v + 1, x)).conj() / 2


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
def lambertw(x: Array, *, k: int = 0) -> Array:
    """Lambert W function: branch ``k`` of the inverse of w e^w, as ``scipy.special.lambertw``.

    The principal branch (k = 0) of a real x >= -1/e is real, as the values a real input asks
    for; a complex x, or another branch, gives SciPy's complex values.

    Args:
        x: real (>= -1/e for a real result) or complex arguments.
        k: the branch.

    Examples:
        >>> import torch
        >>> from npgrad_scipy.special import lambertw
        >>> round(float(lambertw(torch.tensor(1.0))), 6)  # the omega constant
        0.567143
        >>> lambertw(torch.tensor([1.0 + 1.0j]), k=-1).dtype
        torch.complex64
    """
    if np.iscomplexobj(x) or k != 0:
        _domain("lambertw", "x", (x != 0) | (k == 0), f"x != 0 (branch k={k})", x)
        w: Array = special.lambertw(x, k)
        # -1/e rounded to a float: SciPy's principal branch gives NaN there for want of
        # precision; W = -1 at the branch point (of branches 0 and -1).
        at_branch = (x == _BRANCH_POINT) & (k in (0, -1))
        return np.where(at_branch, -1.0 + 0j, w)
    _domain("lambertw", "x", x >= _BRANCH_POINT, "x >= -1/e (pass a complex x below it)", x)
    with np.errstate(invalid="ignore"):
        w = special.lambertw(x).real
    # -1/e rounded to a float falls just outside SciPy's domain (it gives NaN): the branch
    # point, where W = -1.
    return np.where(x == _BRANCH_POINT, -1.0, w)


@lambertw.tensor_backward
def _(grad: torch.Tensor, x: torch.Tensor, *, k: int = 0, outputs: torch.Tensor) -> torch.Tensor:
    # W' = W / (x (1 + W)) = 1 / (x + e^W): no 0/0 at x = 0, +inf at the branch point.
    # Holomorphic: the gradient takes its conjugate (real x: itself).
    return grad / (x + torch.exp(outputs)).conj()


@npgrad.op("scipy::gammaincc", **ELEMENTWISE)
def gammaincc(a: Array, x: Array) -> Array:
    """Regularised upper incomplete gamma function Q(a, x), for a > 0 and x >= 0 (or a = 0).

    Examples:
        >>> import torch
        >>> from npgrad_scipy.special import gammaincc
        >>> float(gammaincc(torch.tensor(1.0), torch.tensor(0.0)))
        1.0
    """
    a_values, x_values = np.broadcast_arrays(a, x)
    _domain("gammaincc", "a", a_values >= 0, "a >= 0", a_values)
    ok = (x_values > 0) | ((x_values == 0) & (a_values > 0))
    _domain("gammaincc", "x", ok, "x >= 0 (x > 0 where a = 0)", x_values)
    return special.gammaincc(a, x)


@gammaincc.tensor_backward
def _(
    grad: torch.Tensor, a: Any, x: torch.Tensor, *, needs_input_grad: tuple[bool, ...]
) -> tuple[torch.Tensor | None, torch.Tensor]:
    a = torch.as_tensor(a, dtype=x.dtype, device=x.device)
    # -x^(a-1) e^(-x) / Gamma(a), with x^(a-1) at x = 0 taken as its limit (0, 1 or inf).
    grad_x = -grad * torch.exp(torch.xlogy(a - 1, x) - x - torch.lgamma(a))
    grad_a = None
    if needs_input_grad[0]:
        # dQ/da = N_1 - psi(a) N_0, N_n the log-moments of gammaincc_moment.
        n0, n1 = gammaincc_moment(a, x, n=0), gammaincc_moment(a, x, n=1)
        grad_a = grad * (n1 - torch.digamma(a) * n0)
    return grad_a, grad_x


@npgrad.op("scipy::gammaincc_moment", **ELEMENTWISE)
def gammaincc_moment(a: Array, x: Array, *, n: int = 0) -> Array:
    """Return the log-moment N_n(a, x) through which Q(a, x) is differentiated in a.

    With ``m_n = integral of (log t)^n t^(a-1) e^(-t) / Gamma(a)`` over ``[x, inf)`` where
    ``x >= a`` (then ``N_n = m_n``, ``N_0 = Q``) and over ``[0, x]`` where ``x < a`` (then
    ``N_n = -m_n``, ``N_0 = -P = Q - 1``): the region that avoids cancellation. Both conventions
    give ``dQ/da = N_1 - psi(a) N_0``, ``dN_n/da = N_{n+1} - psi(a) N_n`` and
    ``dN_n/dx = -(log x)^n x^(a-1) e^(-x) / Gamma(a)``, so the op is differentiable to any
    order. By adaptive quadrature (QUADPACK), to about 1e-13; a > 0, x >= 0.

    Examples:
        >>> import torch
        >>> from npgrad_scipy.special import gammaincc_moment
        >>> round(float(gammaincc_moment(torch.tensor(2.5), torch.tensor(4.0), n=1)), 4)
        0.2575
    """
    a_values, x_values = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(x, dtype=float))
    _domain("gammaincc_moment", "a", a_values > 0, "a > 0", a_values)
    _domain("gammaincc_moment", "x", x_values >= 0, "x >= 0", x_values)
    out = np.empty(a_values.shape)
    for index in np.ndindex(out.shape):
        out[index] = _log_moment(float(a_values[index]), float(x_values[index]), n)
    return out


def _log_moment(a: float, x: float, n: int) -> float:
    lower = x < a
    if n == 0:  # exact from SciPy
        return float(-special.gammainc(a, x) if lower else special.gammaincc(a, x))
    log_gamma = math.lgamma(a)
    if not lower:

        def upper(t: float) -> float:
            return math.log(t) ** n * math.exp((a - 1) * math.log(t) - t - log_gamma)

        return _quad(upper, x, math.inf)
    if x == 0:
        return 0.0
    if n == 1:
        # QUADPACK's algebraic-logarithmic weight t^(a-1) log t: the singularity at 0 exactly.
        weight = {"weight": "alg-loga", "wvar": (a - 1, 0)}
        return -_quad(lambda t: math.exp(-t - log_gamma), 0, x, **weight)
    # t = x u^(1/a): the weight t^(a-1) dt becomes x^a / a du, smooth but for log u.
    scale = math.exp(a * math.log(x) - math.lgamma(a + 1))

    def substituted(u: float) -> float:
        return (math.log(x) + math.log(u) / a) ** n * math.exp(-x * u ** (1 / a)) if u > 0 else 0.0

    return -scale * _quad(substituted, 0, 1)


def _quad(f: Any, low: float, high: float, **weight: Any) -> float:
    # full_output: QUADPACK's notes (a tolerance not quite reached) stay out of the warnings;
    # its estimates are well below the 1e-10 asked of these derivatives.
    result = integrate.quad(
        f, low, high, epsrel=1e-13, epsabs=0, limit=200, full_output=1, **weight
    )
    return float(result[0])


@gammaincc_moment.tensor_backward
def _(
    grad: torch.Tensor,
    a: torch.Tensor,
    x: torch.Tensor,
    *,
    n: int = 0,
    outputs: torch.Tensor,
    needs_input_grad: tuple[bool, ...],
) -> tuple[torch.Tensor | None, torch.Tensor]:
    a = torch.as_tensor(a, dtype=x.dtype, device=x.device)
    grad_a = None
    if needs_input_grad[0]:
        grad_a = grad * (gammaincc_moment(a, x, n=n + 1) - torch.digamma(a) * outputs)
    density = torch.exp(torch.xlogy(a - 1, x) - x - torch.lgamma(a))
    if n == 0:
        return grad_a, -grad * density
    # (log x)^n x^(a-1) at x = 0: its limit, 0 for a > 1, infinite otherwise.
    safe = torch.where(x > 0, x, torch.ones_like(x))
    slope = torch.log(safe) ** n * density
    limit = torch.where(a > 1, 0.0, -((-1.0) ** n) * math.inf)
    return grad_a, -grad * torch.where(x > 0, slope, limit)


def _examples() -> None:
    def positive(*shape: int) -> torch.Tensor:
        return torch.rand(*shape) + 0.5

    # The orders as numbers: constants, not differentiable inputs.
    kv.example(lambda: ((0.7, positive(5)), {}))
    iv.example(lambda: ((1.3, positive(5)), {}))
    ellipk.example(lambda: ((torch.rand(5) * 1.6 - 0.8,), {}))
    ellipe.example(lambda: ((torch.rand(5) * 1.6 - 0.8,), {}))
    lambertw.example(lambda: ((torch.rand(5) * 3 - 0.3,), {}))
    gammaincc.example(lambda: ((torch.tensor(2.5), positive(5)), {}))
    gammaincc_moment.example(lambda: ((torch.rand(4) * 3 + 0.2, positive(4) * 2), {"n": 1}))


_examples()
