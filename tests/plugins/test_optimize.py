"""npgrad_scipy.optimize: SciPy's solutions, with implicit gradients against closed forms."""

from __future__ import annotations

import pytest
import torch

import npgrad
from npgrad_scipy.optimize import least_squares, minimize, root

F64 = torch.float64


def quadratic(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.5 * x @ a @ x - b @ x


def rosenbrock(z: torch.Tensor, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return (a - z[0]) ** 2 + c * (z[1] - z[0] ** 2) ** 2


def spd(n: int) -> torch.Tensor:
    m = torch.randn(n, n, dtype=F64)
    return m @ m.T + n * torch.eye(n, dtype=F64)


def test_a_quadratics_minimiser_and_its_gradients_equal_the_linear_solve() -> None:
    # x^T A x sees only A's symmetric part: so does the solve it is compared with.
    a, b = spd(4).requires_grad_(), torch.randn(4, dtype=F64, requires_grad=True)

    def symmetric(x, a, b):
        return quadratic(x, (a + a.T) / 2, b)

    x = minimize(symmetric, torch.zeros(4, dtype=F64), a, b, method="trust-exact")
    expected_x = torch.linalg.solve((a + a.T) / 2, b)
    torch.testing.assert_close(x, expected_x)
    weights = torch.randn(4, dtype=F64)
    got = torch.autograd.grad((x * weights).sum(), (a, b))
    expected = torch.autograd.grad((expected_x * weights).sum(), (a, b))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)


def test_rosenbrocks_minimiser_as_a_function_of_its_parameters() -> None:
    # The minimiser is (a, a^2), whatever c > 0: dz/da = (1, 2a), dz/dc = 0.
    a = torch.tensor(1.5, dtype=F64, requires_grad=True)
    c = torch.tensor(10.0, dtype=F64, requires_grad=True)
    z = minimize(rosenbrock, torch.zeros(2, dtype=F64), a, c, method="trust-exact")
    torch.testing.assert_close(z, torch.stack([a, a**2]).detach())
    jacobian = torch.autograd.functional.jacobian(
        lambda a, c: minimize(rosenbrock, torch.zeros(2, dtype=F64), a, c, method="trust-exact"),
        (a, c),
    )
    torch.testing.assert_close(jacobian[0], torch.tensor([1.0, 3.0], dtype=F64))
    torch.testing.assert_close(jacobian[1], torch.zeros(2, dtype=F64), atol=1e-9, rtol=0)


def test_minimize_to_second_order_and_against_finite_differences_of_the_solve() -> None:
    def solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        def fun(x, a, b):
            return quadratic(x, a @ a.T + torch.eye(3, dtype=F64), b) + (x**4).sum()

        return minimize(fun, (0.0, 0.0, 0.0), a, b, method="newton-cg", options={"xtol": 1e-12})

    args = (torch.randn(3, 3, dtype=F64, requires_grad=True), torch.randn(3, dtype=F64))
    args = (args[0], args[1].requires_grad_())
    assert torch.autograd.gradcheck(solve, args)
    assert torch.autograd.gradgradcheck(solve, args)
    assert torch.autograd.gradcheck(solve, args, check_forward_ad=True, check_backward_ad=False)


def test_a_linear_systems_root_and_its_gradients() -> None:
    a, b = spd(3).requires_grad_(), torch.randn(3, dtype=F64, requires_grad=True)
    x = root(lambda x, a, b: a @ x - b, torch.zeros(3, dtype=F64), a, b)
    torch.testing.assert_close(x, torch.linalg.solve(a, b))
    weights = torch.randn(3, dtype=F64)
    got = torch.autograd.grad((x * weights).sum(), (a, b))
    expected = torch.autograd.grad((torch.linalg.solve(a, b) * weights).sum(), (a, b))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)

    def cube_root(p: torch.Tensor) -> torch.Tensor:
        return root(lambda x, p: x**3 + x - p, (1.0, 1.0), p, tol=1e-13)

    p = torch.tensor([2.0, 10.0], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(cube_root, (p,))
    assert torch.autograd.gradgradcheck(cube_root, (p,))


def test_least_squares_equals_the_normal_equations_with_their_gradients() -> None:
    t = torch.linspace(0, 1, 8, dtype=F64)
    design = torch.stack([torch.ones_like(t), t, t**2], 1)
    y = torch.randn(8, dtype=F64, requires_grad=True)
    fit = least_squares(lambda p, y: design @ p - y, torch.zeros(3, dtype=F64), y, method="lm")
    expected = torch.linalg.lstsq(design, y[:, None]).solution[:, 0]
    torch.testing.assert_close(fit, expected)
    weights = torch.randn(3, dtype=F64)
    (got,) = torch.autograd.grad((fit * weights).sum(), y)
    (want,) = torch.autograd.grad((expected * weights).sum(), y)
    torch.testing.assert_close(got, want)

    def exponential(y: torch.Tensor) -> torch.Tensor:
        return least_squares(
            lambda p, y: p[0] * torch.exp(p[1] * t) - y, (1.0, 1.0), y, method="lm",
            xtol=1e-15, ftol=1e-15, gtol=1e-15,
        )  # fmt: skip

    data = (2 * torch.exp(-t) + 0.01 * torch.randn(8, dtype=F64)).requires_grad_()
    # Finite differences of the whole solve see its tolerance (1e-10) over the step (1e-6).
    assert torch.autograd.gradcheck(exponential, (data,), atol=1e-4)


def test_the_starting_point_has_a_zero_gradient() -> None:
    x0 = torch.zeros(2, dtype=F64, requires_grad=True)
    b = torch.randn(2, dtype=F64, requires_grad=True)
    x = minimize(quadratic, x0, torch.eye(2, dtype=F64), b)
    gx0, gb = torch.autograd.grad(x.sum(), (x0, b))
    torch.testing.assert_close(gx0, torch.zeros(2, dtype=F64))
    torch.testing.assert_close(gb, torch.ones(2, dtype=F64))


def test_failures_are_named_never_a_gradient_of_an_unconverged_point() -> None:
    with pytest.raises(
        npgrad.errors.ConvergenceError,
        match=r'"scipy::minimize": SciPy did not converge: Maximum number of iterations',
    ):
        minimize(rosenbrock, torch.zeros(2, dtype=F64), 1.5, 100.0, options={"maxiter": 2})
    with pytest.raises(npgrad.errors.ConvergenceError, match=r'"scipy::root": SciPy did not'):
        root(lambda x: x**2 + 1, torch.ones(1, dtype=F64), options={"maxfev": 5})
    # A saddle point (SciPy stops at once: the gradient is zero there): no strict minimum, so
    # no implicit gradient.
    b = torch.zeros(2, dtype=F64, requires_grad=True)
    saddle = minimize(lambda x, b: x[0] ** 2 - x[1] ** 2 + b @ x, torch.zeros(2, dtype=F64), b)
    with pytest.raises(
        npgrad.errors.ConvergenceError,
        match=r'"scipy::minimize": the Hessian at the solution is not positive definite',
    ):
        torch.autograd.grad(saddle.sum(), b)
    with pytest.raises(npgrad.errors.InputError, match=r'"scipy::minimize": got bounds='):
        minimize(quadratic, torch.zeros(2), torch.eye(2), torch.ones(2), bounds=[(0, 1)] * 2)
    with pytest.raises(npgrad.errors.InputError, match=r'"scipy::least_squares": got finite bo'):
        least_squares(lambda p: p - 1, torch.zeros(2), bounds=(0, 2))


def test_a_tensor_read_from_outside_fun_is_refused_not_given_a_zero_gradient() -> None:
    c = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    for solve, fun in (
        (minimize, lambda x: ((x - c) ** 2).sum()),
        (least_squares, lambda x: x - c),
        (root, lambda x: x - c),
    ):
        with pytest.raises(
            npgrad.errors.InputError,
            match=r"fun reads a tensor that requires grad \(or one of a torch.func transform, or a "
            r"dual tensor\) that is not among its arguments; expected every tensor it depends",
        ):
            solve(fun, torch.zeros(2, dtype=F64))


def test_numbers_and_integers_as_parameters() -> None:
    x = minimize(lambda x, n, c: ((x - n * c) ** 2).sum(), torch.zeros(2, dtype=F64), 3, 0.5)
    torch.testing.assert_close(x, torch.full((2,), 1.5, dtype=F64))


def test_no_gradient_of_a_point_that_is_not_the_solution() -> None:
    a = torch.tensor(1.0, dtype=F64, requires_grad=True)

    def offset(x, a, off):
        return rosenbrock(x, a, torch.tensor(100.0, dtype=F64)) + off

    # A large constant in f must not make an iteration limit look converged.
    with pytest.raises(npgrad.errors.ConvergenceError, match=r"SciPy did not converge: Max"):
        minimize(offset, torch.tensor([-1.2, 1.0], dtype=F64), a, 1e12, options={"maxiter": 5})
    # Nor a small scale of fun a root finder's limit.
    with pytest.raises(npgrad.errors.ConvergenceError, match=r'"scipy::root": SciPy did not'):
        root(lambda x, a: 1e-10 * (x**2 - a), torch.ones(1, dtype=F64), 4 * a, method="lm",
             options={"maxiter": 2})  # fmt: skip
    # A line of minimisers: the Hessian [[2, 2], [2, 2]] is singular, however Cholesky rounds.
    c = torch.tensor(1.0, dtype=F64, requires_grad=True)
    x = minimize(lambda x, c: (x[0] + x[1] - c) ** 2, torch.tensor([0.3, -0.2], dtype=F64), c)
    with pytest.raises(npgrad.errors.ConvergenceError, match=r"not positive definite"):
        torch.autograd.grad(x[0], c)
    # A double root: a singular Jacobian.
    x = root(lambda x, a: torch.stack([x[0] + x[1] - a, 2 * x[0] + 2 * x[1] - 2 * a]),
             torch.zeros(2, dtype=F64), a, method="lm")  # fmt: skip
    with pytest.raises(npgrad.errors.ConvergenceError, match=r"the Jacobian of fun in x is sing"):
        torch.autograd.grad(x.sum(), a)


def test_scipys_other_methods_and_spellings() -> None:
    p = torch.tensor([2.0, 10.0], dtype=F64, requires_grad=True)
    for method in ("krylov", "broyden1", "df-sane"):
        x = root(lambda x, p: x**3 + x - p, torch.ones(2, dtype=F64), p, method=method,
                 tol=1e-12)  # fmt: skip
        (g,) = torch.autograd.grad(x.sum(), p)
        torch.testing.assert_close(g, 1 / (3 * x.detach() ** 2 + 1), rtol=1e-6, atol=1e-8)
    c = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    for method in ("Nelder-Mead", "Powell", "BFGS", "L-BFGS-B", "CG"):
        x = minimize(lambda x, c: ((x - c) ** 2).sum(), torch.zeros(2, dtype=F64), c,
                     method=method, tol=1e-12)  # fmt: skip
        torch.testing.assert_close(x, c.detach(), rtol=1e-5, atol=1e-5)
    # A one-element tensor is the scalar SciPy wants; a vector is refused.
    x = minimize(lambda x, c: ((x - c) ** 2).sum().reshape(1), torch.zeros(2, dtype=F64), c)
    (g,) = torch.autograd.grad(x.sum(), c)
    torch.testing.assert_close(g, torch.ones(2, dtype=F64))
    with pytest.raises(npgrad.errors.InputError, match=r"fun returned \(2,\); expected a scalar"):
        minimize(lambda x: x**2, torch.zeros(2, dtype=F64))
    with pytest.raises(npgrad.errors.InputError, match=r"fun returned 3 values for x of 2"):
        root(lambda x: torch.cat([x, x[:1]]), torch.zeros(2, dtype=F64))
    with pytest.raises(npgrad.errors.InputError, match=r'"scipy::minimize": got jac=; expected'):
        minimize(lambda x: (x**2).sum(), torch.zeros(2, dtype=F64), jac="3-point")
    with pytest.raises(npgrad.errors.InputError, match=r"got args=; expected none: pass the"):
        least_squares(lambda x, c: x - c, torch.zeros(2, dtype=F64), args=(c,))


def test_a_tensor_captured_inside_a_torch_func_transform_is_refused() -> None:
    with pytest.raises(
        npgrad.errors.InputError,
        match=r"fun reads a tensor that requires grad \(or one of a torch.func",
    ):
        torch.func.grad(lambda c: minimize(lambda x: ((x - c) ** 2).sum(),
                                           torch.zeros(2, dtype=F64)).sum())(
            torch.tensor([1.0, 2.0], dtype=F64)
        )  # fmt: skip
