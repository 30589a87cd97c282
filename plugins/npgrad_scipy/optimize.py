"""SciPy's solvers with gradients by the implicit function theorem.

``minimize(fun, x0, *params)``, ``root(fun, x0, *params)`` and ``least_squares(fun, x0,
*params)`` take ``fun(x, *params)`` written in torch and return SciPy's solution as a tensor
with gradients for every tensor in ``params``:

- the forward runs ``scipy.optimize`` in float64, ``fun``'s values and derivatives computed by
  torch (autograd), so SciPy's quasi-Newton and trust-region methods get exact gradients;
- the backward differentiates the condition the solution satisfies, not the iterations that
  found it. For a minimiser, ``grad_x f(x*, p) = 0``: ``dx*/dp = -H^{-1} d(grad_x f)/dp``, so
  the backward solves ``H v = g`` with the Hessian from Hessian-vector products
  (``torch.func``; a Cholesky solve, or conjugate gradients for x of more than 4096 elements)
  and returns ``-v^T d(grad_x f)/dp``. For a root, ``fun(x*, p) = 0``: it
  solves ``J_x^T v = g`` with the dense Jacobian in x and returns ``-v^T dfun/dp``. A least
  squares solution minimises ``|fun|^2 / 2``, and takes the minimiser's backward.

Every step of the backward is a torch op on ``fun``, so the gradients are differentiable again
wherever ``fun`` is (Hessians in the parameters, gradient penalties). The solution does not
depend on ``x0`` (locally): its gradient is zero. A solver that does not converge raises a
`ConvergenceError` with SciPy's message, never a gradient of an unconverged point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.optimize
import torch

import npgrad
from npgrad.errors import ConvergenceError, InputError, NotTwiceDifferentiableError
from npgrad_scipy._callbacks import as_tensors, refuse_captured

Array = np.ndarray[Any, Any]
Fun = Callable[..., torch.Tensor]
# The backward's linear solves: the relative residual they must reach.
_SOLVE_TOLERANCE = 1e-10
# Up to this many elements of x the backward forms the Hessian and solves it densely (exact
# at every order); beyond, conjugate gradients (first order, reverse mode).
_DENSE = 4096
# A solved condition (gradient, or fun for a root) this small against its value at x0 counts
# as solved when SciPy stopped for precision loss: stricter than SciPy's own default success
# (BFGS's gtol=1e-5, absolute), which line searches on a quartic often cannot quite reach.
_STATIONARY = 1e-6
# SciPy's methods that take Hessian-vector products, and those that take the Hessian.
_HESSIAN_PRODUCTS = frozenset({"newton-cg", "trust-ncg", "trust-krylov", "trust-constr"})
_HESSIANS = frozenset({"dogleg", "trust-exact"})
# SciPy's methods that take no derivatives: fun's value alone.
_GRADIENT_FREE = frozenset({"nelder-mead", "powell", "cobyla", "cobyqa"})
# SciPy's root methods that take a Jacobian; the others take fun's values alone.
_ROOT_JACOBIANS = frozenset({"hybr", "lm"})


def minimize(
    fun: Fun, x0: Any, *params: Any, method: str | None = None, **options: Any
) -> torch.Tensor:
    """Return the minimiser of ``fun(x, *params)`` over x, from ``x0``, with gradients in params.

    ``scipy.optimize.minimize`` runs in float64 with ``fun``'s gradient from torch; the
    gradient of the minimiser is implicit (see the module).

    Args:
        fun: a scalar torch function of x (the shape of ``x0``) and the parameters.
        x0: the starting point.
        *params: tensors (differentiated), numbers or arrays passed on to ``fun``.
        method: SciPy's method (None: its default, BFGS here). Newton-type methods
            ("newton-cg", "trust-ncg", "trust-krylov", "trust-exact", "dogleg" ...) get
            torch's exact Hessian (products or matrix) unless ``hess``/``hessp`` is given.
        **options: SciPy's keywords: ``tol``, ``options=``, ``callback``. ``bounds`` and
            ``constraints`` are refused: a minimum on a bound does not zero the gradient.

    Examples:
        >>> import torch
        >>> from npgrad_scipy.optimize import minimize
        >>> c = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
        >>> x = minimize(lambda x, c: ((x - c) ** 2).sum(), torch.zeros(2), c)
        >>> x.detach().round(decimals=6)
        tensor([ 1., -2.], dtype=torch.float64)
    """
    _refuse_filled("minimize", options)
    _refuse_constraints("minimize", options)
    refuse_captured("minimize", fun, _start(x0), *params)
    return _minimize(x0, *params, fun=fun, method=method, scipy_options=options)


def least_squares(
    fun: Fun, x0: Any, *params: Any, method: str = "trf", **options: Any
) -> torch.Tensor:
    """Return the x minimising ``|fun(x, *params)|^2``, as ``scipy.optimize.least_squares``.

    Args:
        fun: a torch function of x and the parameters returning the residuals (any shape).
        x0: the starting point.
        *params: tensors (differentiated), numbers or arrays passed on to ``fun``.
        method: SciPy's method: "trf", "dogbox" or "lm".
        **options: SciPy's keywords (``ftol``, ``xtol``, ``gtol``, ``max_nfev``, ``loss`` ...);
            finite ``bounds`` are refused.

    Examples:
        >>> import torch
        >>> from npgrad_scipy.optimize import least_squares
        >>> t = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
        >>> y = torch.tensor([1.0, 3.0, 5.0], dtype=torch.float64, requires_grad=True)
        >>> line = least_squares(lambda p, t, y: p[0] + p[1] * t - y, torch.zeros(2), t, y)
        >>> line.detach().round(decimals=6)
        tensor([1., 2.], dtype=torch.float64)
    """
    bounds = options.get("bounds")
    if bounds is not None and np.any(np.isfinite(np.asarray(bounds, dtype=float))):
        raise InputError(
            'npgrad op "scipy::least_squares": got finite bounds; expected none: a solution '
            "on a bound does not satisfy the condition the implicit gradient differentiates"
        )
    if options.get("loss", "linear") != "linear":
        raise InputError(
            f'npgrad op "scipy::least_squares": loss={options["loss"]!r}; expected "linear": '
            f"the implicit gradient differentiates the minimum of |fun|^2 / 2"
        )
    _refuse_filled("least_squares", options)
    refuse_captured("least_squares", fun, _start(x0), *params)
    return _least_squares(x0, *params, fun=fun, method=method, scipy_options=options)


def root(fun: Fun, x0: Any, *params: Any, method: str = "hybr", **options: Any) -> torch.Tensor:
    """Return an x with ``fun(x, *params) = 0``, as ``scipy.optimize.root``, differentiable.

    Args:
        fun: a torch function of x returning as many values as x has.
        x0: the starting point.
        *params: tensors (differentiated), numbers or arrays passed on to ``fun``.
        method: SciPy's method ("hybr", "lm", "broyden1" ...).
        **options: SciPy's keywords: ``tol``, ``options=``, ``callback``.

    Examples:
        >>> import torch
        >>> from npgrad_scipy.optimize import root
        >>> a = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
        >>> x = root(lambda x, a: x**2 - a, torch.ones(1), a)
        >>> float(x.detach()), float(torch.autograd.grad(x.sum(), a)[0])  # sqrt(a), 1 / (2 sqrt(a))
        (2.0, 0.25)
    """
    _refuse_filled("root", options)
    refuse_captured("root", fun, _start(x0), *params)
    return _root(x0, *params, fun=fun, method=method, scipy_options=options)


# --- the ops -----------------------------------------------------------------------------


def _start(x0: Any) -> torch.Tensor:
    if isinstance(x0, torch.Tensor):
        return x0.detach().to(torch.float64)
    return torch.tensor(np.asarray(x0, dtype=np.float64))


def _refuse_filled(name: str, options: dict[str, Any]) -> None:
    for key, why in (
        ("jac", "torch's exact derivatives of fun are used"),
        ("args", "pass the arguments after x0, as (fun, x0, *params), to get their gradients"),
    ):
        if key in options:
            raise InputError(f'npgrad op "scipy::{name}": got {key}=; expected none: {why}')


def _refuse_constraints(name: str, options: dict[str, Any]) -> None:
    for key in ("bounds", "constraints"):
        if options.get(key) is not None:
            raise InputError(
                f'npgrad op "scipy::{name}": got {key}=; expected an unconstrained problem: a '
                f"minimum held by {key} does not zero the gradient, the condition the implicit "
                f"gradient differentiates; reparametrise (e.g. x = exp(z) for x > 0)"
            )


def _value(fun: Fun, x: torch.Tensor, params: list[Any]) -> torch.Tensor:
    return fun(x, *params)


def _scalar(fun: Fun) -> Fun:
    """``fun`` with a one-element tensor result as a 0-d tensor; anything else refused."""

    def scalar(x: torch.Tensor, *params: Any) -> torch.Tensor:
        value = fun(x, *params)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputError(
                f'npgrad op "scipy::minimize": fun returned {got}; expected a scalar tensor '
                f"(one element): the value to minimise"
            )
        return value.reshape(())

    return scalar


def _solved(result: Any, residual: Array, initial: Array) -> bool:
    """Whether a point SciPy flagged unconverged solves its condition to working precision.

    Its residual (gradient, or fun for a root) must be tiny against the residual at x0 (the
    problem's own scale, whatever constant f carries), and SciPy must have stopped for
    precision, not at a limit of iterations or evaluations.
    """
    message = str(result.message).lower()
    if any(word in message for word in ("maximum", "maxfev", "maxiter", "exceeded", "reached")):
        return False
    scale = float(np.max(np.abs(initial), initial=0.0))
    return float(np.max(np.abs(residual), initial=0.0)) <= _STATIONARY * scale


def _converged(name: str, result: Any, stationary: bool = False) -> Array:
    """Return SciPy's solution, or raise if it did not converge.

    ``stationary``: the residual of the solved condition is zero to working precision, as
    SciPy's "precision loss" stops often leave it at a tolerance tighter than float64 allows:
    such a point is the solution, whatever SciPy's flag says.
    """
    if not (result.success or stationary):
        raise ConvergenceError(
            f'npgrad op "scipy::{name}": SciPy did not converge: {result.message} (after '
            f"{getattr(result, 'nit', getattr(result, 'nfev', '?'))} iterations); expected a "
            f"converged solution, whose gradient is defined; give a better x0, another method "
            f"or looser tolerances"
        )
    return np.asarray(result.x)


@npgrad.op("scipy::minimize")
def _minimize(
    x0: Array, *params: Array, fun: Fun, method: str | None, scipy_options: dict[str, Any]
) -> Array:
    tensors = as_tensors(params)
    x0 = np.asarray(x0, dtype=np.float64)
    shape = x0.shape
    fun = _scalar(fun)

    # Reverse mode only: the forward may run inside a level of forward-mode AD (gradcheck's
    # forward check), which torch cannot nest.
    def value_and_gradient(flat: Array) -> tuple[float, Array]:
        x = torch.tensor(flat.reshape(shape), dtype=torch.float64, requires_grad=True)
        with torch.enable_grad():
            value = _value(fun, x, tensors)
            (gradient,) = torch.autograd.grad(value, x)
        return float(value.detach()), gradient.numpy().ravel()

    def hessian_product(flat: Array, direction: Array) -> Array:
        x = torch.tensor(flat.reshape(shape), dtype=torch.float64, requires_grad=True)
        along = torch.tensor(direction.reshape(shape), dtype=torch.float64)
        with torch.enable_grad():
            (gradient,) = torch.autograd.grad(_value(fun, x, tensors), x, create_graph=True)
            (product,) = torch.autograd.grad(gradient, x, along)
        return product.numpy().ravel()

    def hessian(flat: Array) -> Array:
        x = torch.tensor(flat.reshape(shape), dtype=torch.float64)
        with torch.enable_grad():
            matrix = torch.autograd.functional.hessian(lambda v: _value(fun, v, tensors), x)
        return matrix.reshape(flat.size, flat.size).numpy()

    # Second-order methods get torch's exact Hessian (products, or the matrix).
    second: dict[str, Any] = {}
    chosen = method.lower() if isinstance(method, str) else ""
    if chosen in _HESSIAN_PRODUCTS and "hessp" not in scipy_options:
        second["hessp"] = hessian_product
    elif chosen in _HESSIANS and "hess" not in scipy_options:
        second["hess"] = hessian
    start = np.array(x0, dtype=np.float64).ravel()
    if chosen in _GRADIENT_FREE:
        result = scipy.optimize.minimize(
            lambda flat: value_and_gradient(flat)[0], start, method=method, **scipy_options
        )
    else:
        result = scipy.optimize.minimize(
            value_and_gradient, start, jac=True, method=method, **second, **scipy_options
        )
    _, gradient = value_and_gradient(np.asarray(result.x))
    _, initial = value_and_gradient(start)
    stationary = _solved(result, gradient, initial)
    return _converged("minimize", result, stationary).reshape(shape)


@_minimize.tensor_backward
def _(
    grad: torch.Tensor,
    x0: torch.Tensor,
    *params: Any,
    fun: Fun,
    method: str | None,
    scipy_options: dict[str, Any],
    outputs: torch.Tensor,
    needs_input_grad: tuple[bool, ...],
) -> tuple[Any, ...]:
    return _stationary_gradients(
        "minimize", _scalar(fun), grad, x0, params, outputs, needs_input_grad
    )


@npgrad.op("scipy::least_squares")
def _least_squares(
    x0: Array, *params: Array, fun: Fun, method: str, scipy_options: dict[str, Any]
) -> Array:
    tensors = as_tensors(params)
    x0 = np.asarray(x0, dtype=np.float64)
    shape = x0.shape

    def residuals(flat: Array) -> Array:
        x = torch.tensor(flat.reshape(shape), dtype=torch.float64)
        with torch.no_grad():
            return _value(fun, x, tensors).numpy().ravel()

    def jacobian(flat: Array) -> Array:
        x = torch.tensor(flat.reshape(shape), dtype=torch.float64)
        full = torch.func.jacrev(lambda v: _value(fun, v, tensors).reshape(-1))(x)
        return full.reshape(full.shape[0], -1).numpy()

    result = scipy.optimize.least_squares(
        residuals, np.array(x0, dtype=np.float64).ravel(), jac=jacobian, method=method,
        **scipy_options,
    )  # fmt: skip
    return _converged("least_squares", result).reshape(shape)


@_least_squares.tensor_backward
def _(
    grad: torch.Tensor,
    x0: torch.Tensor,
    *params: Any,
    fun: Fun,
    method: str,
    scipy_options: dict[str, Any],
    outputs: torch.Tensor,
    needs_input_grad: tuple[bool, ...],
) -> tuple[Any, ...]:
    def half_squares(x: torch.Tensor, *ps: Any) -> torch.Tensor:
        return 0.5 * fun(x, *ps).pow(2).sum()

    return _stationary_gradients(
        "least_squares", half_squares, grad, x0, params, outputs, needs_input_grad
    )


@npgrad.op("scipy::root")
def _root(x0: Array, *params: Array, fun: Fun, method: str, scipy_options: dict[str, Any]) -> Array:
    tensors = as_tensors(params)
    x0 = np.asarray(x0, dtype=np.float64)
    shape = x0.shape

    def values(flat: Array) -> Array:
        x = torch.tensor(flat.reshape(shape), dtype=torch.float64)
        with torch.no_grad():
            value = _value(fun, x, tensors).reshape(-1)
        if value.numel() != flat.size:
            raise InputError(
                f'npgrad op "scipy::root": fun returned {value.numel()} values for x of '
                f"{flat.size}; expected as many values as unknowns (a square system); for an "
                f"over- or underdetermined one use least_squares"
            )
        return value.numpy()

    def values_and_jacobian(flat: Array) -> tuple[Array, Array]:
        x = torch.tensor(flat.reshape(shape), dtype=torch.float64)
        full = torch.func.jacrev(lambda v: _value(fun, v, tensors).reshape(-1))(x)
        return values(flat), full.reshape(flat.size, -1).numpy()

    start = np.array(x0, dtype=np.float64).ravel()
    if isinstance(method, str) and method.lower() in _ROOT_JACOBIANS:
        result = scipy.optimize.root(
            values_and_jacobian, start, jac=True, method=method, **scipy_options
        )
    else:
        result = scipy.optimize.root(values, start, method=method, **scipy_options)
    stationary = _solved(result, values(np.asarray(result.x)), values(start))
    return _converged("root", result, stationary).reshape(shape)


@_root.tensor_backward
def _(
    grad: torch.Tensor,
    x0: torch.Tensor,
    *params: Any,
    fun: Fun,
    method: str,
    scipy_options: dict[str, Any],
    outputs: torch.Tensor,
    needs_input_grad: tuple[bool, ...],
) -> tuple[Any, ...]:
    x = outputs.to(torch.float64)
    wanted = _wanted(params, needs_input_grad)
    tensors = [_double(p) for p in params]

    def values(v: torch.Tensor, *ps: Any) -> torch.Tensor:
        return fun(v, *ps).reshape(-1)

    jacobian = torch.func.jacrev(lambda v: values(v, *tensors))(x).reshape(x.numel(), x.numel())
    # J_x^T v = g: torch's solve, differentiable again.
    try:
        v = torch.linalg.solve(jacobian.mT, grad.to(torch.float64).reshape(-1))
    except RuntimeError as error:  # torch's LinAlgError: a singular Jacobian
        raise ConvergenceError(
            f'npgrad op "scipy::root": the Jacobian of fun in x is singular at the root '
            f"({error}), so the root does not move smoothly with the parameters and has no "
            f"implicit gradient; check the problem (a double root, a redundant equation)"
        ) from None
    return (_zero_for(x0), *_pulled_back(values, x, tensors, wanted, v))


# --- the implicit gradients ------------------------------------------------------------------


def _zero_for(x0: Any) -> torch.Tensor | None:
    # The solution does not move with the starting point (locally): its gradient is zero.
    return torch.zeros_like(x0) if isinstance(x0, torch.Tensor) else None


def _double(p: Any) -> Any:
    if isinstance(p, torch.Tensor) and p.is_floating_point():
        return p.to(torch.float64)
    return p


def _wanted(params: tuple[Any, ...], needs: tuple[bool, ...]) -> list[int]:
    return [
        k
        for k, p in enumerate(params)
        if needs[1 + k]
        and isinstance(p, torch.Tensor)
        and (p.is_floating_point() or p.is_complex())
    ]


def _pulled_back(
    condition: Callable[..., torch.Tensor],
    x: torch.Tensor,
    tensors: list[Any],
    wanted: list[int],
    v: torch.Tensor,
) -> list[torch.Tensor | None]:
    """Return -v^T d condition(x, *params) / d params for the parameters in ``wanted``."""
    result: list[torch.Tensor | None] = [None] * len(tensors)
    if not wanted:
        return result

    def of_wanted(*chosen: torch.Tensor) -> torch.Tensor:
        full = list(tensors)
        for k, value in zip(wanted, chosen, strict=True):
            full[k] = value
        return condition(x, *full).reshape(-1)

    _, pullback = torch.func.vjp(of_wanted, *[tensors[k] for k in wanted])
    for k, gradient in zip(wanted, pullback(v), strict=True):
        result[k] = -gradient
    return result


def _stationary_gradients(
    name: str,
    objective: Callable[..., torch.Tensor],
    grad: torch.Tensor,
    x0: torch.Tensor,
    params: tuple[Any, ...],
    outputs: torch.Tensor,
    needs: tuple[bool, ...],
) -> tuple[Any, ...]:
    """The gradients of a minimiser x* of ``objective``: grad_x objective(x*, params) = 0."""
    x = outputs.to(torch.float64)
    wanted = _wanted(params, needs)
    tensors = [_double(p) for p in params]

    def stationarity(v: torch.Tensor, *ps: Any) -> torch.Tensor:
        return torch.func.grad(lambda w: objective(w, *ps))(v)

    # H d as the vjp of the gradient (H is symmetric): reverse mode only, so that this runs
    # inside forward-mode AD too, which torch cannot nest.
    _, pullback = torch.func.vjp(lambda w: stationarity(w, *tensors), x)

    def hessian_times(direction: torch.Tensor) -> torch.Tensor:
        (product,) = pullback(direction)
        return product

    b = grad.to(torch.float64)
    if x.numel() <= _DENSE:
        # The Hessian itself (n products, one vmapped pullback) and a dense solve: linear in b
        # exactly, so every derivative of this backward is exact too, at b = 0 included
        # (torch's own double-backward trick differentiates there).
        n = x.numel()
        rows = torch.func.vmap(hessian_times)(torch.eye(n, dtype=x.dtype).reshape(n, *x.shape))
        hessian = rows.reshape(n, n)
        v = _positive_definite_solve(name, hessian, b.reshape(-1))
    else:
        if torch.is_grad_enabled():  # create_graph, or a torch.func transform around it
            raise NotTwiceDifferentiableError(
                f'npgrad op "scipy::{name}": x has {x.numel()} elements, more than {_DENSE}: '
                f"its implicit gradient is solved by conjugate gradients, exact to first order "
                f"in reverse mode only; asked for a derivative of the gradient, forward mode, or a "
                f"gradient inside a torch.func transform. Solve a smaller problem, or "
                f"differentiate once with .backward() or torch.autograd.grad"
            )
        with torch.no_grad():
            v = _conjugate_gradients(name, hessian_times, b)
    return (_zero_for(x0), *_pulled_back(stationarity, x, tensors, wanted, v.reshape(-1)))


def _positive_definite_solve(name: str, hessian: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solve H v = b by Cholesky, refusing a Hessian that is not positive definite."""
    factor, info = torch.linalg.cholesky_ex((hessian + hessian.mT) / 2)
    # A flat direction can pass Cholesky on rounding alone: a pivot that small against the
    # Hessian's scale is a zero curvature.
    pivots = torch.diagonal(factor.detach()) ** 2
    scale = float(hessian.detach().abs().max()) if hessian.numel() else 0.0
    if int(info) != 0 or (pivots.numel() and float(pivots.min()) <= 1e-12 * scale):
        raise ConvergenceError(
            f'npgrad op "scipy::{name}": the Hessian at the solution is not positive definite, '
            f"so the solution is no strict minimum and has no implicit gradient; check the "
            f"problem (a saddle point, or a flat direction)"
        )
    return torch.cholesky_solve(b[:, None], factor)[:, 0]


def _conjugate_gradients(
    name: str, apply: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor
) -> torch.Tensor:
    """Solve H v = b for a symmetric positive definite H given as products, with torch ops."""
    v = torch.zeros_like(b)
    residual = b
    direction = residual
    squared = (residual * residual).sum()
    target = (_SOLVE_TOLERANCE * b.norm()) ** 2
    limit = 10 * b.numel() + 20
    for _ in range(limit):
        if float(squared.detach()) <= float(target.detach()):
            return v
        product = apply(direction)
        curvature = (direction * product).sum()
        if float(curvature.detach()) <= 0:
            raise ConvergenceError(
                f'npgrad op "scipy::{name}": the Hessian at the solution is not positive '
                f"definite (curvature {float(curvature.detach()):.3g} along a direction), so "
                f"the solution is no strict minimum and has no implicit gradient; check the problem"
            )
        step = squared / curvature
        v = v + step * direction
        residual = residual - step * product
        new = (residual * residual).sum()
        direction = residual + (new / squared) * direction
        squared = new
    if float(squared.detach()) <= float(target.detach()):
        return v
    raise ConvergenceError(
        f'npgrad op "scipy::{name}": conjugate gradients on the Hessian did not reach a relative '
        f"residual of {_SOLVE_TOLERANCE:g} in {limit} steps (got "
        f"{float((squared.sqrt() / b.norm()).detach()):.2g}); the Hessian is ill-conditioned there"
    )


# --- examples for npgrad check ----------------------------------------------------------------


def _quadratic(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.5 * x @ (a @ a.mT + torch.eye(len(x), dtype=x.dtype)) @ x - b @ x + (x**4).sum()


def _square_roots(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return x**2 + 0.1 * x.sum() - a


def _parabola(p: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Linear in p, so SciPy solves it to rounding: finite differences of the solve are clean.
    return p[0] + p[1] * t + p[2] * t**2 - y


@_minimize.example
def _() -> tuple[tuple[Any, ...], dict[str, Any]]:
    # x0 a constant: finite differences in it see only the solver's tolerance. Fixed draws:
    # how close newton-cg gets before its line search stops varies with the problem, and
    # finite differences of the whole solve need it close.
    generator = torch.Generator().manual_seed(0)
    args = (
        (0.0, 0.0, 0.0),
        torch.randn(3, 3, generator=generator),
        torch.randn(3, generator=generator),
    )
    options = {"options": {"xtol": 1e-12}}
    return args, {"fun": _quadratic, "method": "newton-cg", "scipy_options": options}


@_root.example
def _() -> tuple[tuple[Any, ...], dict[str, Any]]:
    args = ((1.0, 1.0, 1.0), torch.rand(3) + 1)
    return args, {"fun": _square_roots, "method": "hybr", "scipy_options": {"tol": 1e-13}}


@_least_squares.example
def _() -> tuple[tuple[Any, ...], dict[str, Any]]:
    t = torch.linspace(0, 1, 6) + 0.1 * torch.rand(6)
    y = 2 * torch.exp(-t) + 0.01 * torch.randn(6)
    options = {"xtol": 1e-15, "ftol": 1e-15, "gtol": 1e-15}
    return ((1.0, 1.0, 1.0), t, y), {"fun": _parabola, "method": "lm", "scipy_options": options}
