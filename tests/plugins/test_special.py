"""npgrad_scipy.special against SciPy's values and independent gradient checks."""

from __future__ import annotations

import warnings

import mpmath
import numpy as np
import pytest
import scipy.special
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import npgrad
from npgrad import _torch_internals as internals
from npgrad_scipy.special import ellipe, ellipk, gammaincc, iv, kv, lambertw

from shared_ops import legacy_batched

UNARY = [
    (ellipk, scipy.special.ellipk, (-2.0, 0.95)),
    (ellipe, scipy.special.ellipe, (-2.0, 1.0)),
    (lambertw, lambda x: scipy.special.lambertw(x).real, (-0.36, 5.0)),
]
BINARY = [
    (kv, scipy.special.kv, (0.1, 6.0)),
    (iv, scipy.special.iv, (0.0, 6.0)),
    (gammaincc, scipy.special.gammaincc, (0.0, 6.0)),
]


@pytest.mark.parametrize(("op", "reference", "domain"), UNARY, ids=lambda v: getattr(v, "name", ""))
def test_unary_values_and_gradients(op, reference, domain) -> None:
    x = torch.linspace(*domain, 23, dtype=torch.float64)
    torch.testing.assert_close(op(x), torch.from_numpy(reference(x.numpy())))
    inner = x[1:-1].clone().requires_grad_()
    assert torch.autograd.gradcheck(op, (inner,), check_forward_ad=True)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(BINARY), st.floats(0.2, 4.0), st.integers(0, 2**16))
def test_binary_values_and_gradients_in_x(case, parameter, seed) -> None:
    op, reference, (low, high) = case
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(7, generator=generator, dtype=torch.float64) * (high - low) + low + 0.05
    p = torch.tensor(parameter, dtype=torch.float64)
    torch.testing.assert_close(op(p, x), torch.from_numpy(reference(parameter, x.numpy())))
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: op(p, t), (x,), check_forward_ad=True)


def derivative(op, at: list[float]) -> torch.Tensor:
    x = torch.tensor(at, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(op(x).sum(), x)
    return g


def test_special_values_at_the_edges() -> None:
    zero = [0.0]
    for op, slope in ((ellipk, np.pi / 8), (ellipe, -np.pi / 8), (lambertw, 1.0)):
        torch.testing.assert_close(derivative(op, zero), torch.tensor([slope], dtype=torch.float64))
    # The branch point of W: -1/e rounded to a float is where SciPy gives NaN.
    branch = torch.tensor([-1 / np.e], dtype=torch.float64)
    assert lambertw(branch).item() == -1.0
    assert derivative(lambertw, [-1 / np.e]).item() == float("inf")


@pytest.mark.parametrize("m", [1e-15, -1e-15, 1e-9, 1e-4, 2e-3, 0.5, -3.0, 0.999999, 1 - 1e-12])
def test_elliptic_derivatives_against_mpmath(m: float) -> None:
    # The closed forms cancel as m -> 0 (15 % off at 1e-15 before): the series takes over.
    k = float(mpmath.diff(mpmath.ellipk, m))
    torch.testing.assert_close(derivative(ellipk, [m]).item(), k, rtol=1e-10, atol=0)
    e = float(mpmath.diff(mpmath.ellipe, m))
    torch.testing.assert_close(derivative(ellipe, [m]).item(), e, rtol=1e-9, atol=0)


@pytest.mark.parametrize(("a", "slope"), [(1.0, -1.0), (2.0, 0.0), (0.5, -float("inf"))])
def test_the_incomplete_gamma_slope_at_zero(a: float, slope: float) -> None:
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning escapes
        (g,) = torch.autograd.grad(gammaincc(a, x).sum(), x)
    assert g.item() == slope


def test_the_incomplete_gamma_at_a_zero_follows_scipy() -> None:
    x = torch.tensor([0.5, 2.0], dtype=torch.float64)
    torch.testing.assert_close(gammaincc(0.0, x), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(npgrad.errors.InputError, match=r'input "x" has 1 value\(s\) outside'):
        gammaincc(0.0, torch.tensor([0.0, 1.0], dtype=torch.float64))


def test_bessel_i_of_negative_x_for_integer_orders() -> None:
    x = torch.tensor([-1.5, -0.3, 0.7], dtype=torch.float64, requires_grad=True)
    for order in (2.0, 3.0):
        expected = torch.from_numpy(scipy.special.iv(order, x.detach().numpy()))
        torch.testing.assert_close(iv(order, x), expected)
        assert torch.autograd.gradcheck(lambda t, order=order: iv(order, t), (x,))
    with pytest.raises(
        npgrad.errors.InputError,
        match=r'"scipy::iv": input "x" has 2 value\(s\) outside the real domain x >= 0, or an '
        r"integer order v \(e.g. -1.5\)",
    ):
        iv(2.5, x.detach())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: kv(torch.tensor(1.0), torch.tensor([1.0, -2.0])),
            r'"scipy::kv": input "x" has 1 value\(s\) outside the real domain x > 0 \(e.g. -2.0\)',
        ),
        (lambda: ellipk(torch.tensor([1.5])), r'"scipy::ellipk": .* outside the real domain m < 1'),
        (lambda: lambertw(torch.tensor([-1.0])), r'"scipy::lambertw": .* x >= -1/e'),
        (
            lambda: gammaincc(torch.tensor(-1.0), torch.tensor([1.0])),
            r'"scipy::gammaincc": input "a" has 1 value\(s\) outside the real domain a >= 0',
        ),
    ],
    ids=["kv", "ellipk", "lambertw", "gammaincc"],
)
def test_outside_the_domain_is_a_clear_error(call, message: str) -> None:
    with pytest.raises(npgrad.NpgradError, match=message):
        call()


def test_the_order_is_not_differentiable() -> None:
    v = torch.tensor(1.0, requires_grad=True)
    with pytest.raises(
        npgrad.NpgradError,
        match=r'"scipy::kv": a gradient was asked for input "v" \(position 0\), which the op '
        r"does not differentiate",
    ):
        kv(v, torch.tensor([1.0])).sum().backward()
    # Forward mode too: a tangent in the order is an error, never a zero.
    x = torch.tensor([0.7, 2.0], dtype=torch.float64)
    order = torch.tensor([0.5, 1.5], dtype=torch.float64)
    if not internals.ENABLED:
        return
    for op, name, what in ((kv, "kv", "v"), (iv, "iv", "v")):
        with pytest.raises(
            npgrad.errors.MissingBackwardError,
            match=rf'"scipy::{name}": a gradient was asked for input "{what}"',
        ):
            torch.func.jvp(lambda o, op=op: op(o, x), (order,), (torch.ones_like(order),))
    _, tangent = torch.func.jvp(lambda t: kv(order, t), (x,), (torch.ones_like(x),))
    torch.testing.assert_close(tangent, torch.func.jacrev(kv, argnums=1)(order, x).diagonal())


def test_batched_gradients_with_an_input_that_gets_none() -> None:
    # A number order, and an order tensor without a gradient: zeros fill its place in the
    # batched backward, shaped by the whole batch.
    def derivative(v: np.ndarray, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((scipy.special.iv(v - 1, x) + scipy.special.iv(v + 1, x)) / 2)

    x = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    order = torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(
        torch.func.jacrev(iv, argnums=1)(order, x),
        torch.diag(derivative(order.numpy(), x.numpy())),
    )
    with legacy_batched(numpy_gradients=False):  # a backward made of ops
        jacobian = torch.autograd.functional.jacobian(lambda t: iv(2.0, t), x, vectorize=True)
        torch.testing.assert_close(jacobian, torch.diag(derivative(np.array(2.0), x.numpy())))


def test_broadcasting_and_batches() -> None:
    v = torch.tensor([[0.5], [1.5]], dtype=torch.float64)
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    out = kv(v, x)
    assert out.shape == (2, 3)
    out.sum().backward()
    expected = (
        -(
            scipy.special.kv(v.numpy() - 1, x.detach().numpy())
            + scipy.special.kv(v.numpy() + 1, x.detach().numpy())
        )
        / 2
    )
    torch.testing.assert_close(x.grad, torch.from_numpy(expected.sum(0)))


def test_hessians_match_finite_differences() -> None:
    # x*x inside: the Hessian has a term through the op's own gradient, made of ops.
    x = torch.rand(3, dtype=torch.float64) + 0.5
    step = 1e-5
    for op, first in ((iv, 1.5), (kv, 0.7), (gammaincc, 2.5)):

        def gradient(t: torch.Tensor, op=op, first=first) -> torch.Tensor:
            t = t.detach().requires_grad_()
            (g,) = torch.autograd.grad(op(first, t * t).sum(), t)
            return g

        hessian = torch.autograd.functional.hessian(
            lambda t, op=op, first=first: op(first, t * t).sum(), x
        )
        fd = torch.stack(
            [
                (gradient(x + step * e) - gradient(x - step * e)) / (2 * step)
                for e in torch.eye(3, dtype=torch.float64)
            ]
        )
        torch.testing.assert_close(hessian, fd, rtol=1e-6, atol=1e-8, msg=op.name)
    for op in (ellipk, ellipe, lambertw):
        m = torch.rand(4, dtype=torch.float64) * 0.8 - 0.2
        assert torch.autograd.gradgradcheck(op, (m.requires_grad_(),))


@pytest.mark.parametrize(
    ("a", "x"), [(0.1, 0.05), (0.1, 2.0), (0.5, 1e-8), (2.5, 1.0), (2.5, 4.0), (10.0, 3.0),
                 (10.0, 20.0), (30.0, 0.5), (50.0, 40.0), (50.0, 49.9), (50.0, 60.0)],
)  # fmt: skip
def test_the_incomplete_gamma_in_its_parameter_against_mpmath(a: float, x: float) -> None:
    # d/da by quadrature of log-moments, in whichever of [0, x] and [x, inf) does not cancel.
    at = torch.tensor([a], dtype=torch.float64, requires_grad=True)
    (got,) = torch.autograd.grad(gammaincc(at, torch.tensor([x], dtype=torch.float64)).sum(), at)
    with mpmath.workdps(40):
        expected = mpmath.diff(lambda s: mpmath.gammainc(s, x, mpmath.inf, regularized=True), a)
    torch.testing.assert_close(got.item(), float(expected), rtol=1e-10, atol=1e-300)


def test_the_incomplete_gamma_to_second_order_in_both_inputs() -> None:
    a = torch.tensor([0.1, 0.7, 2.5, 12.0, 45.0], dtype=torch.float64, requires_grad=True)
    x = torch.tensor([0.05, 2.0, 1.0, 20.0, 40.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gammaincc, (a, x), check_forward_ad=internals.ENABLED)
    assert torch.autograd.gradgradcheck(gammaincc, (a, x))


def test_complex_arguments_and_branches() -> None:
    z = torch.tensor([0.5 + 0.3j, 2 - 1j, -1 + 0.5j], dtype=torch.complex128, requires_grad=True)
    v = torch.tensor(1.5, dtype=torch.float64)
    for op, reference in ((kv, scipy.special.kv), (iv, scipy.special.iv)):
        expected = reference(1.5, z.detach().numpy())
        np.testing.assert_allclose(op(v, z).detach().numpy(), expected, rtol=1e-12)
        assert torch.autograd.gradcheck(lambda t, op=op: op(v, t), (z,))
        assert torch.autograd.gradgradcheck(lambda t, op=op: op(v, t), (z,))
    for k in (0, -1, 2):
        expected = scipy.special.lambertw(z.detach().numpy(), k)
        np.testing.assert_allclose(lambertw(z, k=k).detach().numpy(), expected, rtol=1e-12)
        assert torch.autograd.gradcheck(lambda t, k=k: lambertw(t, k=k), (z,))
        assert torch.autograd.gradgradcheck(lambda t, k=k: lambertw(t, k=k), (z,))
    # A real x on another branch, or below -1/e as a complex number: SciPy's complex values.
    x = torch.tensor([0.5, 2.0], dtype=torch.float64, requires_grad=True)
    assert lambertw(x, k=-1).dtype == torch.complex128
    assert torch.autograd.gradcheck(lambda t: lambertw(t, k=-1), (x,))
    below = torch.tensor([-1.0 + 0j], dtype=torch.complex128)
    np.testing.assert_allclose(lambertw(below).numpy(), scipy.special.lambertw(-1.0 + 0j))
    with pytest.raises(npgrad.errors.InputError, match=r'"scipy::kv": input "x" .* x != 0'):
        kv(v, torch.zeros(1, dtype=torch.complex128))
