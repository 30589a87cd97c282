"""SciPy's ODE integrators with gradients by the continuous adjoint.

``solve_ivp(fun, t_span, y0, *params, t_eval=...)`` takes ``fun(t, y, *params)`` written in
torch, as SciPy's ``fun(t, y, *args)``, and returns SciPy's solution at ``t_eval`` (shape
``(n, len(t_eval))``, SciPy's ``sol.y``) with gradients for ``y0``, every tensor in
``params``, ``t_eval`` and ``t_span[0]``.

The forward integrates with ``scipy.integrate.solve_ivp`` in float64; implicit methods
("Radau", "BDF", "LSODA") get torch's exact Jacobian of ``fun``. The backward integrates the
adjoint ODE backwards in time, with SciPy and the forward's method and tolerances: for a loss
L of the solution, ``a(t) = dL/dy(t)`` and the parameters' gradient ``g(t)`` follow::

    da/dt = -a^T df/dy            a jumps by dL/dy(t_k) at each t_k of t_eval
    dg/dt = -a^T df/dp            g(t_end) = 0

down to t0, where ``dL/dy0 = a(t0)``, ``dL/dp = g(t0)`` and ``dL/dt0 = -a(t0) . f(t0, y0)``;
``dL/dt_k = dL/dy(t_k) . f(t_k, y(t_k))``. Nothing of the forward's steps is kept, only the
solution at ``t_eval``. The adjoint needs y along the way back:

- ``adjoint="checkpointed"`` (the default): on each stretch between two times of t_eval, y is
  integrated forward again from its saved value, as SciPy's interpolant, and (a, g) back along
  it. Stable and as accurate as the forward; memory grows with one stretch's steps.
- ``adjoint="backsolve"``: y is integrated back with (a, g) (``dy/dt = f``, restarted at
  each saved y(t_k)), as torchdiffeq's ``odeint_adjoint``: memory independent of the steps,
  but a dissipative or stiff system, integrated backwards, amplifies its errors.

Derivatives of the gradient always backsolve: each stretch is then itself a ``solve_ivp`` of
the augmented system (y, a, g), an op with its own adjoint, so the gradients are
differentiable again (Hessians, gradient penalties), to any order, and forward mode comes
from the transpose of the backward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.integrate
import torch

import npgrad
from npgrad.errors import ConvergenceError, InputError
from npgrad_scipy._callbacks import as_tensors, refuse_captured

Array = np.ndarray[Any, Any]
Fun = Callable[..., torch.Tensor]
F64 = torch.float64
# SciPy's methods that use a Jacobian of fun: torch's exact one is given.
_IMPLICIT = frozenset({"radau", "bdf", "lsoda"})
# SciPy's keywords that would change what the op returns, or that npgrad fills itself.
_REFUSED = {
    "events": "an event ends the integration early, so the solution at t_eval would be cut",
    "dense_output": "the op returns the solution at t_eval; call SciPy for an interpolant",
    "vectorized": "npgrad calls fun on torch tensors itself",
    "args": "pass the arguments after y0, as solve_ivp(fun, t_span, y0, *params), to get "
    "their gradients",
    "jac": "torch's exact Jacobian of fun is used",
}


def solve_ivp(
    fun: Fun,
    t_span: tuple[Any, Any],
    y0: Any,
    *params: Any,
    t_eval: Any,
    method: str = "RK45",
    adjoint: str = "checkpointed",
    **options: Any,
) -> torch.Tensor:
    """Return the solution of ``dy/dt = fun(t, y, *params)`` at ``t_eval``, as SciPy's ``sol.y``.

    Gradients flow to ``y0``, the tensors in ``params``, ``t_eval`` and ``t_span[0]`` by the
    continuous adjoint (see the module).

    Args:
        fun: ``fun(t, y, *params)`` in torch: ``t`` a 0-d float64 tensor, ``y`` of shape (n,);
            it returns dy/dt of shape (n,). Every tensor it depends on is passed in ``params``.
        t_span: (t0, t_end), numbers or 0-d tensors; t0 is differentiated.
        y0: the initial state, of shape (n,).
        *params: tensors (differentiated), numbers or arrays passed on to ``fun``.
        t_eval: the times at which to return the solution, sorted in the direction of
            integration, from t0 on (required: the gradient needs them); times beyond t_end
            extend the integration to them.
        method: SciPy's method: "RK45", "RK23", "DOP853", "Radau", "BDF" or "LSODA".
        adjoint: how the backward finds y along the way back. "checkpointed" (stable): y is
            integrated forward again from its saved value at each time of t_eval, and
            interpolated; memory grows with the steps between two times of t_eval.
            "backsolve": y is integrated backwards with the adjoint, in memory independent of
            the steps, but unstable for dissipative or stiff systems. Derivatives of the
            gradient (second order, forward mode) always backsolve.
        **options: SciPy's keywords (``rtol``, ``atol``, ``max_step``, ``first_step``);
            the adjoint uses the same tolerances.

    Examples:
        >>> import torch
        >>> from npgrad_scipy.integrate import solve_ivp
        >>> k = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
        >>> t = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> y = solve_ivp(lambda t, y, k: -k * y, (0, 2), [1.0], k, t_eval=t, rtol=1e-10)
        >>> y.detach().round(decimals=6)  # exp(-k t)
        tensor([[0.6065, 0.3679]], dtype=torch.float64)
        >>> (g,) = torch.autograd.grad(y[0, 1], k)  # -t exp(-k t) at t = 2
        >>> round(float(g), 6)
        -0.735759
    """
    for key, why in _REFUSED.items():
        if key in options:
            raise InputError(
                f'npgrad op "scipy::solve_ivp": got {key}=; expected none of {sorted(_REFUSED)}'
                f": {why}"
            )
    if adjoint not in ("checkpointed", "backsolve"):
        raise InputError(
            f'npgrad op "scipy::solve_ivp": adjoint={adjoint!r}; expected "checkpointed" or '
            f'"backsolve"'
        )
    if t_eval is None:
        raise InputError(
            'npgrad op "scipy::solve_ivp": t_eval is None; expected the times at which to '
            "return the solution, as a sequence or tensor: the gradient needs fixed times"
        )
    try:
        t0, t_end = t_span
    except (TypeError, ValueError):
        raise InputError(
            f'npgrad op "scipy::solve_ivp": t_span is {t_span!r}; expected two numbers (t0, t_end)'
        ) from None
    if not isinstance(y0, torch.Tensor):
        y0 = np.asarray(y0, dtype=np.float64)
    if not isinstance(t_eval, torch.Tensor):
        # Times given as numbers take the state's dtype: a float32 state gives a float32 solution.
        floating = isinstance(y0, torch.Tensor) and y0.is_floating_point()
        t_eval = torch.tensor(
            np.asarray(t_eval, dtype=np.float64), dtype=y0.dtype if floating else F64
        )
    # t a plain number tensor: fun may branch on float(t).
    moment, start = _time(_number(t0)), torch.as_tensor(y0).detach().to(F64)
    refuse_captured("solve_ivp", lambda y, *ps: fun(moment, y, *ps), start, *params)
    return _solve_ivp(
        y0, t0, t_eval, *params, fun=fun, t_end=_number(t_end), method=method, adjoint=adjoint,
        scipy_options=options,
    )  # fmt: skip


# --- the op ------------------------------------------------------------------------------


def _number(t: Any) -> float:
    # t_end moves nothing of the solution at t_eval: a tensor there is read as a number.
    return float(t.detach()) if isinstance(t, torch.Tensor) else float(t)


def _time(t: float) -> torch.Tensor:
    return torch.tensor(t, dtype=F64)


@npgrad.op("scipy::solve_ivp")
def _solve_ivp(
    y0: Array,
    t0: Array,
    t_eval: Array,
    *params: Array,
    fun: Fun,
    t_end: float,
    method: str,
    adjoint: str,
    scipy_options: dict[str, Any],
) -> Array:
    tensors = as_tensors(params)
    if np.iscomplexobj(y0):
        raise InputError(
            f'npgrad op "scipy::solve_ivp": y0 is {y0.dtype}; expected a real state: stack the '
            f"real and imaginary parts"
        )
    y0 = np.array(y0, dtype=np.float64)
    times = np.array(t_eval, dtype=np.float64)
    if y0.ndim != 1 or times.ndim != 1:
        raise InputError(
            f'npgrad op "scipy::solve_ivp": y0 of shape {y0.shape} and t_eval of shape '
            f"{times.shape}; expected both 1-D, as SciPy's: flatten the state and the times"
        )
    start = float(t0)
    n = y0.size

    # A last time of t_eval beyond t_end (a learned time, a finite difference) extends the
    # integration to it, instead of SciPy's refusal.
    end = max(t_end, *times) if t_end >= start else min(t_end, *times)
    system = lambda t, y: fun(t, y, *tensors)  # noqa: E731
    solution = _integrate(system, (start, end), y0, method, scipy_options, t_eval=times)
    return np.asarray(solution.y, dtype=np.float64).reshape(n, times.size)


def _integrate(
    system: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    span: tuple[float, float],
    y0: Array,
    method: str,
    options: dict[str, Any],
    **extra: Any,
) -> Any:
    """Integrate ``dy/dt = system(t, y)`` with SciPy, the Jacobian from torch where used."""
    n = y0.size

    def rhs(t: float, y: Array) -> Array:
        with torch.no_grad():
            value = system(_time(t), torch.from_numpy(y))
        if not isinstance(value, torch.Tensor) or value.shape != (n,):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputError(
                f'npgrad op "scipy::solve_ivp": fun returned {got}; expected a tensor of '
                f"shape ({n},), the shape of y"
            )
        return value.detach().to(F64).numpy()

    def jacobian(t: float, y: Array) -> Array:
        along_y = torch.func.jacrev(lambda v: system(_time(t), v))
        return along_y(torch.from_numpy(np.array(y))).detach().numpy()

    name = method if isinstance(method, str) else getattr(method, "__name__", "")
    if name.lower() in _IMPLICIT:
        extra["jac"] = jacobian
    try:
        solution = scipy.integrate.solve_ivp(rhs, span, y0, method=method, **extra, **options)
    except ValueError as error:  # SciPy's checks of its arguments
        raise InputError(f'npgrad op "scipy::solve_ivp": SciPy refused the call: {error}') from None
    if solution.status != 0:
        raise ConvergenceError(
            f'npgrad op "scipy::solve_ivp": SciPy failed before t = {span[1]:.6g}: '
            f"{solution.message}; expected the solution at every time of t_eval, whose "
            f"gradient is defined; loosen rtol/atol, raise max_step, or try an implicit "
            f"method (Radau, BDF) for a stiff problem"
        )
    return solution


def _with(params: list[Any], wanted: list[int], chosen: tuple[torch.Tensor, ...]) -> list[Any]:
    full = list(params)
    for k, value in zip(wanted, chosen, strict=True):
        full[k] = value
    return full


def _pulled_back(
    fun: Fun,
    t: torch.Tensor,
    y: torch.Tensor,
    a: torch.Tensor,
    params: list[Any],
    wanted: list[int],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Return f(t, y, p), and -a^T df/dy and -a^T df/dp flattened for the params in wanted."""
    value, pullback = torch.func.vjp(
        lambda y, *chosen: fun(t, y, *_with(params, wanted, chosen)),
        y,
        *[params[k] for k in wanted],
    )
    along_y, *along_params = pullback(a)
    return value, [-along_y, *[-g.reshape(-1) for g in along_params]]


class _Adjoint:
    """The augmented system (y, a, g) for ``fun``, y integrated back alongside.

    ``wanted`` are the positions in params whose gradient g accumulates.
    """

    def __init__(self, fun: Fun, n: int, wanted: list[int]) -> None:
        self.fun, self.n, self.wanted = fun, n, wanted

    def __call__(self, t: torch.Tensor, s: torch.Tensor, *params: Any) -> torch.Tensor:
        n = self.n
        value, rates = _pulled_back(self.fun, t, s[:n], s[n : 2 * n], list(params), self.wanted)
        return torch.cat([value, *rates])


def _adjoint_options(options: dict[str, Any], leading: Any, rest: int) -> dict[str, Any]:
    """The forward's tolerances for an adjoint state of ``leading`` (y or nothing) and rest."""
    result = {key: value for key, value in options.items() if key != "first_step"}
    atol = np.asarray(options.get("atol", 1e-6), dtype=np.float64)
    if atol.ndim:
        result["atol"] = np.concatenate([atol[:leading], np.full(rest, atol.min())])
    return result


def _checkpointed(
    fun: Fun,
    grads: Array,
    ys: Array,
    times: Array,
    start: float,
    y0: Array,
    tensors: list[Any],
    wanted: list[int],
    method: str,
    scipy_options: dict[str, Any],
) -> tuple[Array, Array]:
    """Return a(t0) and g(t0) of the adjoint, y interpolated instead of integrated back.

    Between two consecutive times of t_eval, y is integrated forward again from its saved
    value, with SciPy's dense output, and the adjoint (a, g) integrated back along it: stable
    where integrating y backwards is not (a dissipative or stiff system runs backwards into
    an exponential growth of its errors), at the memory of one stretch's steps. First order
    only: SciPy's interpolant is not differentiable.
    """
    n = ys.shape[0]
    rest = sum(tensors[k].numel() for k in wanted)
    options = _adjoint_options(scipy_options, 0, n + rest)
    options_without_first_step = {k: v for k, v in scipy_options.items() if k != "first_step"}
    a, accumulated = np.zeros(n), np.zeros(rest)
    for k in reversed(range(times.size)):
        a = a + grads[:, k]
        here, back = float(times[k]), float(times[k - 1] if k else start)
        if here == back:
            continue
        y_back = ys[:, k - 1] if k else y0
        # One stretch of t_eval: the forward's first_step may not fit in it.
        path = _integrate(
            lambda t, y: fun(t, y, *tensors), (back, here), np.array(y_back), method,
            options_without_first_step, dense_output=True,
        )  # fmt: skip

        def adjoint(t: torch.Tensor, s: torch.Tensor, path: Any = path) -> torch.Tensor:
            y = torch.from_numpy(path.sol(float(t)))
            return torch.cat(_pulled_back(fun, t, y, s[:n], tensors, wanted)[1])

        state = np.concatenate([a, np.zeros(rest)])
        end = _integrate(adjoint, (here, back), state, method, options).y[:, -1]
        a, accumulated = end[:n], accumulated + end[n:]
    return a, accumulated


@_solve_ivp.tensor_backward
def _(
    grad: torch.Tensor,
    y0: torch.Tensor,
    t0: torch.Tensor,
    t_eval: torch.Tensor,
    *params: Any,
    fun: Fun,
    t_end: float,
    method: str,
    adjoint: str,
    scipy_options: dict[str, Any],
    outputs: torch.Tensor,
    needs_input_grad: tuple[bool, ...],
) -> tuple[Any, ...]:
    grads = grad.to(F64)
    ys = outputs.to(F64)
    times = torch.as_tensor(t_eval, dtype=F64)
    start = torch.as_tensor(t0, dtype=F64)
    initial = torch.as_tensor(y0, dtype=F64)
    tensors = [
        p.to(F64) if isinstance(p, torch.Tensor) and p.is_floating_point() else p for p in params
    ]
    wanted = [
        k
        for k, p in enumerate(params)
        if needs_input_grad[3 + k] and isinstance(p, torch.Tensor) and p.is_floating_point()
    ]
    for k, p in enumerate(params):
        if needs_input_grad[3 + k] and isinstance(p, torch.Tensor) and p.is_complex():
            raise InputError(
                f'npgrad op "scipy::solve_ivp": parameter {k} is complex and needs a gradient; '
                f"expected real parameters: pass the real and imaginary parts separately"
            )
    n = ys.shape[0]
    sizes = [tensors[k].numel() for k in wanted]

    time_grads = []
    if needs_input_grad[2]:
        time_grads = [
            (grads[:, k] * fun(times[k], ys[:, k], *tensors)).sum() for k in range(times.numel())
        ]
    if adjoint == "checkpointed" and not torch.is_grad_enabled():
        # Differentiated once (no graph of the backward asked for): the stable stretchwise
        # adjoint, in NumPy.
        a_end, g_end = _checkpointed(
            fun, *(v.detach().numpy() for v in (grads, ys, times)), float(start),
            initial.detach().numpy(), tensors, wanted, method, scipy_options,
        )  # fmt: skip
        a, accumulated = torch.from_numpy(a_end), torch.from_numpy(g_end)
    else:
        # Every stretch of the adjoint is a solve_ivp of (y, a, g) again: differentiable.
        augmented = _Adjoint(fun, n, wanted)
        options = _adjoint_options(scipy_options, n, n + sum(sizes))
        a = torch.zeros(n, dtype=F64)
        accumulated = torch.zeros(sum(sizes), dtype=F64)
        for k in reversed(range(times.numel())):
            a = a + grads[:, k]
            here, back = times[k], (times[k - 1] if k else start)
            if float(here.detach()) == float(back.detach()):
                continue
            state = torch.cat([ys[:, k], a, torch.zeros_like(accumulated)])
            end = _solve_ivp(
                state, here, back.reshape(1), *tensors, fun=augmented,
                t_end=float(back.detach()), method=method, adjoint=adjoint,
                scipy_options=options,
            )[:, 0]  # fmt: skip
            a, accumulated = end[n : 2 * n], accumulated + end[2 * n :]

    t0_grad = -(a * fun(start, initial, *tensors)).sum() if needs_input_grad[1] else None
    t_eval_grad = torch.stack(time_grads) if needs_input_grad[2] else None
    param_grads: list[Any] = [None] * len(params)
    for k, piece in zip(wanted, accumulated.split(sizes), strict=True):
        param_grads[k] = piece.reshape(tensors[k].shape)
    return (a, t0_grad, t_eval_grad, *param_grads)


# --- an example for npgrad check -----------------------------------------------------------


def _damped(t: torch.Tensor, y: torch.Tensor, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    # A driven, damped oscillator with a cubic spring: nonlinear in y and the parameters.
    return torch.stack([y[1], -(w**2) * y[0] - c * y[1] - 0.1 * y[0] ** 3 + torch.sin(t)])


@_solve_ivp.example
def _() -> tuple[tuple[Any, ...], dict[str, Any]]:
    y0 = torch.randn(2)
    t_eval = torch.tensor([0.4, 1.1, 1.5])
    args = (y0, 0.0, t_eval, 1.0 + 0.2 * torch.rand(()), 0.3 + 0.1 * torch.rand(()))
    options = {"rtol": 1e-12, "atol": 1e-12}
    config = {
        "fun": _damped, "t_end": 1.5, "method": "DOP853", "adjoint": "checkpointed",
        "scipy_options": options,
    }  # fmt: skip
    return args, config
