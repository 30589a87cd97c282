"""npgrad_scipy.integrate.solve_ivp: SciPy's solutions, adjoint gradients against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import torch

import npgrad
from npgrad_scipy.integrate import solve_ivp

F64 = torch.float64
TIGHT = {"rtol": 1e-11, "atol": 1e-12}


def decay(t: torch.Tensor, y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return -k * y


def oscillator(t: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[1], -(w**2) * y[0]])


def nonlinear(t: torch.Tensor, y: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # A driven pendulum with friction: nonlinear in y and in both parameters.
    return torch.stack([y[1], -a * torch.sin(y[0]) - b**2 * y[1] + 0.3 * torch.cos(t)])


def leaf(*values: float) -> torch.Tensor:
    return torch.tensor(values if len(values) > 1 else values[0], dtype=F64, requires_grad=True)


def test_exponential_decay_and_every_gradient_equal_the_closed_form() -> None:
    k, t0 = leaf(0.7), leaf(0.2)
    y0 = leaf(1.0, -2.0)
    t = leaf(0.2, 0.5, 1.0, 2.5)  # the first at t0 itself
    t_end = torch.tensor(2.5, dtype=F64, requires_grad=True)  # read as a number
    y = solve_ivp(decay, (t0, t_end), y0, k, t_eval=t, **TIGHT)
    exact = y0[:, None] * torch.exp(-k * (t - t0))
    torch.testing.assert_close(y, exact, rtol=1e-10, atol=1e-12)
    weights = torch.randn(2, 4, dtype=F64)
    got = torch.autograd.grad((y * weights).sum(), (k, y0, t, t0))
    expected = torch.autograd.grad((exact * weights).sum(), (k, y0, t, t0))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-11)


def test_the_harmonic_oscillator_and_its_frequency_gradient() -> None:
    # x(t) = x0 cos(w t) + v0 / w sin(w t): d/dw and d/dy0 in closed form, through torch.
    w = leaf(1.3)
    y0 = leaf(0.5, 1.0)
    t = torch.linspace(0.1, 6.0, 7, dtype=F64)
    y = solve_ivp(oscillator, (0, 6), y0, w, t_eval=t, method="DOP853", **TIGHT)
    x = y0[0] * torch.cos(w * t) + y0[1] / w * torch.sin(w * t)
    v = -y0[0] * w * torch.sin(w * t) + y0[1] * torch.cos(w * t)
    torch.testing.assert_close(y, torch.stack([x, v]), rtol=1e-9, atol=1e-10)
    got = torch.autograd.grad((y[0] ** 2).sum() + y[1].sum(), (w, y0))
    expected = torch.autograd.grad((x**2).sum() + v.sum(), (w, y0))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-9)


def test_the_solution_is_scipys_own() -> None:
    args = (1.5, 0.4)
    y0 = np.array([0.3, -0.2])
    t = np.linspace(0, 4, 9)

    def rhs(t: float, y: np.ndarray, a: float, b: float) -> np.ndarray:
        return np.array([y[1], -a * np.sin(y[0]) - b**2 * y[1] + 0.3 * np.cos(t)])

    expected = scipy.integrate.solve_ivp(rhs, (0, 4), y0, t_eval=t, args=args).y
    got = solve_ivp(
        nonlinear,
        (0, 4),
        torch.from_numpy(y0),
        *(torch.tensor(a, dtype=F64) for a in args),
        t_eval=t,
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-14)
    assert got.shape == (2, 9)
    assert got.dtype == F64


def pendulum(a: torch.Tensor, b: torch.Tensor, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return solve_ivp(nonlinear, (0, 2), y0, a, b, t_eval=t, method="DOP853", rtol=1e-12, atol=1e-12)


PENDULUM = (leaf(1.5), leaf(0.6), leaf(0.4, -0.3), leaf(0.5, 1.2, 2.0))


def test_gradients_to_second_order_and_in_forward_mode_match_finite_differences() -> None:
    assert torch.autograd.gradcheck(pendulum, PENDULUM)
    assert torch.autograd.gradgradcheck(pendulum, PENDULUM)
    assert torch.autograd.gradcheck(
        pendulum, PENDULUM, check_forward_ad=True, check_backward_ad=False
    )


def test_every_door_agrees_with_backward() -> None:
    a, b, y0, t = (x.detach() for x in PENDULUM)

    def loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.tanh(pendulum(a, b, y0, t)).pow(2).sum()

    a_, b_ = a.clone().requires_grad_(), b.clone().requires_grad_()
    (ga, gb) = torch.autograd.grad(loss(a_, b_), (a_, b_), create_graph=True)
    (haa,) = torch.autograd.grad(ga, a_)
    torch.testing.assert_close(torch.func.grad(loss)(a, b), ga.detach())
    torch.testing.assert_close(torch.func.jacfwd(loss, argnums=1)(a, b), gb.detach())
    torch.testing.assert_close(torch.func.hessian(loss)(a, b), haa, rtol=1e-6, atol=1e-8)
    _, hvp = torch.autograd.functional.hvp(lambda a: loss(a, b), a, torch.tensor(1.0, dtype=F64))
    torch.testing.assert_close(hvp, haa, rtol=1e-6, atol=1e-8)
    # Second order against central differences of the first.
    eps = 1e-5
    fd = (torch.func.grad(loss)(a + eps, b) - torch.func.grad(loss)(a - eps, b)) / (2 * eps)
    torch.testing.assert_close(haa, fd, rtol=1e-5, atol=1e-7)


def test_a_stiff_problem_with_an_implicit_method() -> None:
    # y' = -k (y - cos t): stiff at k = 1000; its solution tends to cos t (with a lag):
    # gradients against finite differences of the whole solve, in BDF and Radau.
    k = leaf(1000.0)
    y0 = leaf(0.0)
    t = torch.tensor([0.5, 1.0], dtype=F64)

    def stiff(method: str):
        def solve(k: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
            return solve_ivp(
                lambda t, y, k: -k * (y - torch.cos(t)), (0, 1), y0.reshape(1), k, t_eval=t,
                method=method, rtol=1e-10, atol=1e-13,
            )  # fmt: skip

        return solve

    for method in ("Radau", "BDF"):
        y = stiff(method)(k, y0)
        # y = (k^2 cos t + k sin t) / (1 + k^2) once the transient has decayed.
        exact = (k**2 * torch.cos(t) + k * torch.sin(t)) / (1 + k**2)
        torch.testing.assert_close(y[0], exact, rtol=1e-7, atol=1e-9)
        (got,) = torch.autograd.grad(y.sum(), k)
        (want,) = torch.autograd.grad(exact.sum(), k)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-9)


def test_integrating_backwards_in_time() -> None:
    def solve(y0: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        t = torch.tensor([1.0, 0.5, -1.0], dtype=F64)
        return solve_ivp(oscillator, (1.0, -1.0), y0, w, t_eval=t, method="DOP853", **TIGHT)

    args = (leaf(0.2, 0.7), leaf(0.9))
    assert torch.autograd.gradcheck(solve, args)


def test_numbers_and_integers_as_parameters() -> None:
    y = solve_ivp(lambda t, y, n, c: -n * y + c, (0, 1), [1.0], 2, 0.5, t_eval=[1.0], **TIGHT)
    # y' = -2 y + 1/2: y = 1/4 + 3/4 exp(-2 t)
    assert math.isclose(float(y), 0.25 + 0.75 * math.exp(-2), rel_tol=1e-9)


def test_float32_inputs_give_float32_outputs_and_gradients() -> None:
    k = torch.tensor(0.5, requires_grad=True)
    y0 = torch.tensor([1.0], requires_grad=True)
    y = solve_ivp(decay, (0.0, 1.0), y0, k, t_eval=[1.0])
    assert y.dtype == torch.float32
    gk, gy0 = torch.autograd.grad(y.sum(), (k, y0))
    assert gk.dtype == gy0.dtype == torch.float32
    assert math.isclose(float(gk), -math.exp(-0.5), rel_tol=1e-4)


def test_a_module_as_the_right_hand_side_through_functional_call() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    net = net.double()
    names = [name for name, _ in net.named_parameters()]

    def fun(t: torch.Tensor, y: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(net, dict(zip(names, weights, strict=True)), (y,))

    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.linspace(0.1, 1, 4, dtype=F64)
    y = solve_ivp(fun, (0, 1), y0, *net.parameters(), t_eval=t, method="DOP853", **TIGHT)
    y.pow(2).sum().backward()

    # The same through a torch-written fine RK4 loop, differentiated by backpropagation.
    steps = 2000
    h = 1.0 / steps
    state, outputs = y0, []
    for i in range(steps):
        s = i * h
        k1 = net(state)
        k2 = net(state + h / 2 * k1)
        k3 = net(state + h / 2 * k2)
        k4 = net(state + h * k3)
        state = state + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if any(abs((i + 1) * h - float(x)) < 1e-9 for x in t):
            outputs.append(state)
        del s
    expected = torch.autograd.grad(
        torch.stack(outputs, 1).pow(2).sum(), list(net.parameters()), allow_unused=False
    )
    for p, e in zip(net.parameters(), expected, strict=True):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, e, rtol=1e-7, atol=1e-9)


def test_failures_and_refusals_are_named() -> None:
    k = leaf(0.5)
    with pytest.raises(npgrad.errors.InputError, match=r'"scipy::solve_ivp": t_eval is None'):
        solve_ivp(decay, (0, 1), [1.0], k, t_eval=None)
    with pytest.raises(npgrad.errors.InputError, match=r"got events=; expected none of"):
        solve_ivp(decay, (0, 1), [1.0], k, t_eval=[1.0], events=lambda t, y: y[0])
    with pytest.raises(npgrad.errors.InputError, match=r"got args=; .* pass the arguments after"):
        solve_ivp(decay, (0, 1), [1.0], t_eval=[1.0], args=(k,))
    with pytest.raises(npgrad.errors.InputError, match=r"fun returned \(3,\); expected a tensor"):
        solve_ivp(lambda t, y: torch.zeros(3), (0, 1), [1.0], t_eval=[1.0])
    with pytest.raises(npgrad.errors.InputError, match=r"y0 of shape \(1, 1\)"):
        solve_ivp(decay, (0, 1), [[1.0]], k, t_eval=[1.0])
    z = torch.tensor(0.5 + 0.1j, requires_grad=True)
    y = solve_ivp(lambda t, y, z: -z.real * y, (0, 1), [1.0], z, t_eval=[1.0])
    with pytest.raises(npgrad.errors.InputError, match=r"parameter 0 is complex and needs a grad"):
        y.sum().backward()
    with pytest.raises(npgrad.errors.InputError, match=r"SciPy refused the call: Values in"):
        solve_ivp(decay, (0, 1), [1.0], k, t_eval=[-1.0])
    # A tensor read from outside fun's arguments would get no gradient: refused.
    with pytest.raises(
        npgrad.errors.InputError,
        match=r"fun reads a tensor that requires grad \(or one of a torch.func transform",
    ):
        solve_ivp(lambda t, y: -k * y, (0, 1), [1.0], t_eval=[1.0])
    # y' = y^2 from y(0) = 1 blows up at t = 1.
    with pytest.raises(
        npgrad.errors.ConvergenceError,
        match=r'"scipy::solve_ivp": SciPy failed before t = 2: Required step',
    ):
        solve_ivp(lambda t, y: y**2, (0, 2), [1.0], t_eval=[2.0])


def test_both_adjoints_agree_with_the_closed_form() -> None:
    w = leaf(1.3)
    y0 = leaf(0.5, 1.0)
    t = torch.linspace(0.1, 6.0, 5, dtype=F64)
    x = y0[0] * torch.cos(w * t) + y0[1] / w * torch.sin(w * t)
    expected = torch.autograd.grad(x.pow(2).sum(), (w, y0))
    for adjoint in ("checkpointed", "backsolve"):
        y = solve_ivp(oscillator, (0, 6), y0, w, t_eval=t, adjoint=adjoint, **TIGHT)
        got = torch.autograd.grad(y[0].pow(2).sum(), (w, y0))
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-9)
    with pytest.raises(npgrad.errors.InputError, match=r"adjoint='exact'; expected \"checkp"):
        solve_ivp(oscillator, (0, 6), y0, w, t_eval=t, adjoint="exact")


def test_a_tensor_captured_inside_a_torch_func_transform_is_refused() -> None:
    y0 = torch.tensor([1.0, 2.0], dtype=F64)

    def loss(k: torch.Tensor) -> torch.Tensor:
        return solve_ivp(lambda t, y: -k * y, (0, 2), y0, t_eval=[1.0, 2.0]).sum()

    with pytest.raises(
        npgrad.errors.InputError,
        match=r"fun reads a tensor that requires grad \(or one of a torch.func",
    ):
        torch.func.grad(loss)(torch.tensor(0.5, dtype=F64))
    # Passed as a parameter, the same loss is differentiated.
    g = torch.func.grad(
        lambda k: solve_ivp(decay, (0, 2), y0, k, t_eval=[1.0, 2.0], **TIGHT).sum()
    )(torch.tensor(0.5, dtype=F64))
    expected = -(y0.sum() * (math.exp(-0.5) + 2 * math.exp(-1.0)))
    torch.testing.assert_close(g, expected.to(F64), rtol=1e-8, atol=1e-10)


def test_scipys_method_classes_first_step_and_a_branch_on_t() -> None:
    k = leaf(0.5)

    # A branch on float(t), a method given as SciPy's class, a first_step longer than a stretch.
    def switched(t: torch.Tensor, y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return -k * y if float(t) < 10 else -2 * k * y

    y = solve_ivp(switched, (0, 1), torch.ones(1, dtype=F64), k,
                  t_eval=torch.linspace(0.1, 1, 10, dtype=F64), method=scipy.integrate.Radau,
                  first_step=0.5, **TIGHT)  # fmt: skip
    (g,) = torch.autograd.grad(y[0, -1], k)
    torch.testing.assert_close(g, torch.tensor(-math.exp(-0.5), dtype=F64), rtol=1e-7, atol=0)
