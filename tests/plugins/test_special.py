"""npgrad_scipy.special against SciPy's values and independent gradient checks."""

from __future__ import annotations

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


def test_special_values_at_the_edges() -> None:
    zero = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    for op, slope in ((ellipk, np.pi / 8), (ellipe, -np.pi / 8), (lambertw, 1.0)):
        (g,) = torch.autograd.grad(op(zero).sum(), zero)
        torch.testing.assert_close(g, torch.tensor([slope], dtype=torch.float64))


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
    for op, name, what in ((kv, "kv", "v"), (iv, "iv", "v"), (gammaincc, "gammaincc", "a")):
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
