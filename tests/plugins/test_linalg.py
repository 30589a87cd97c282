"""npgrad_scipy.linalg.sqrtm against SciPy's values and gradient checks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

import npgrad
from npgrad import _torch_internals as internals
from npgrad_scipy.linalg import solve_sylvester, sqrtm


def spd(*batch: int, n: int = 4) -> torch.Tensor:
    m = torch.randn(*batch, n, n, dtype=torch.float64)
    return m @ m.transpose(-1, -2) + n * torch.eye(n, dtype=torch.float64)


def test_values_equal_scipy_and_square_back() -> None:
    a = spd()
    root = sqrtm(a)
    torch.testing.assert_close(root, torch.from_numpy(scipy.linalg.sqrtm(a.numpy()).real))
    torch.testing.assert_close(root @ root, a)


def test_gradients_backward_and_forward() -> None:
    a = spd(n=3).requires_grad_()
    assert torch.autograd.gradcheck(sqrtm, (a,), check_forward_ad=True)
    batch = spd(2, n=3).requires_grad_()
    assert torch.autograd.gradcheck(sqrtm, (batch,))


def test_a_non_symmetric_matrix_too() -> None:
    a = (
        torch.eye(3, dtype=torch.float64) * 3 + torch.triu(torch.rand(3, 3, dtype=torch.float64))
    ).requires_grad_()
    assert torch.autograd.gradcheck(sqrtm, (a,))


def test_hips_autograds_sqrtm_case_gives_the_complex_root_with_its_gradient() -> None:
    # HIPS autograd's test_sqrtm: a symmetrised random 3x3, whose root is complex in 97 % of
    # draws; this one has a negative eigenvalue.
    m = np.random.default_rng(0).standard_normal((3, 3))
    a = torch.from_numpy(m + m.T)
    assert torch.linalg.eigvalsh(a).min() < 0
    root = sqrtm(a)
    assert root.dtype == torch.complex128
    np.testing.assert_allclose(root.numpy(), scipy.linalg.sqrtm(a.numpy()), atol=1e-12)
    torch.testing.assert_close(root @ root, a.to(torch.complex128))
    # A real input: its gradient is real, the real part of the complex one (torch's way).
    a.requires_grad_()
    (g,) = torch.autograd.grad(sqrtm(a).abs().sum(), a)
    assert g.dtype == torch.float64
    assert torch.autograd.gradcheck(sqrtm, (a,))
    assert torch.autograd.gradgradcheck(sqrtm, (a,))


def test_complex_matrices() -> None:
    rng = np.random.default_rng(1)
    a = torch.from_numpy(rng.standard_normal((3, 3)) + 1j * rng.standard_normal((3, 3)))
    np.testing.assert_allclose(sqrtm(a).numpy(), scipy.linalg.sqrtm(a.numpy()), atol=1e-12)
    assert torch.autograd.gradcheck(sqrtm, (a.requires_grad_(),))
    b = torch.randn(2, 2, dtype=torch.complex128) + 3 * torch.eye(2)
    q = torch.randn(3, 2, dtype=torch.complex128)
    args = (a.detach() + 3 * torch.eye(3), b, q)
    args = tuple(t.requires_grad_() for t in args)
    assert torch.autograd.gradcheck(solve_sylvester, args)
    assert torch.autograd.gradgradcheck(solve_sylvester, args)


def test_every_order_and_forward_mode() -> None:
    # The backward is a Sylvester solve, itself an op with a gradient: Hessians, and forward
    # mode through the backward's transpose, against finite differences.
    a = spd(n=3).requires_grad_()
    assert torch.autograd.gradgradcheck(sqrtm, (a,))
    batch = spd(2, n=2).requires_grad_()
    assert torch.autograd.gradgradcheck(sqrtm, (batch,))
    s = spd(n=3)
    direction = torch.randn(3, 3, dtype=torch.float64)
    _, hvp = torch.autograd.functional.hvp(lambda m: sqrtm(m @ m.mT).sum(), s, direction)
    step = 1e-5

    def gradient(m: torch.Tensor) -> torch.Tensor:
        m = m.detach().requires_grad_()
        (g,) = torch.autograd.grad(sqrtm(m @ m.mT).sum(), m)
        return g

    expected = (gradient(s + step * direction) - gradient(s - step * direction)) / (2 * step)
    torch.testing.assert_close(hvp, expected, rtol=1e-6, atol=1e-8)
    if internals.ENABLED:
        _, tangent = torch.func.jvp(sqrtm, (s,), (direction,))
        fd = (sqrtm(s + step * direction) - sqrtm(s - step * direction)) / (2 * step)
        torch.testing.assert_close(tangent, fd, rtol=1e-6, atol=1e-8)


def test_solve_sylvester_equals_scipy_and_differentiates_to_any_order() -> None:
    a = torch.randn(3, 3, dtype=torch.float64) + 3 * torch.eye(3, dtype=torch.float64)
    b = torch.randn(2, 2, dtype=torch.float64) + 3 * torch.eye(2, dtype=torch.float64)
    q = torch.randn(3, 2, dtype=torch.float64)
    x = solve_sylvester(a, b, q)
    torch.testing.assert_close(
        x, torch.from_numpy(scipy.linalg.solve_sylvester(a.numpy(), b.numpy(), q.numpy()))
    )
    torch.testing.assert_close(a @ x + x @ b, q)
    inputs = (a.requires_grad_(), b.requires_grad_(), q.requires_grad_())
    assert torch.autograd.gradcheck(solve_sylvester, inputs)
    assert torch.autograd.gradgradcheck(solve_sylvester, inputs)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_a_matrix_without_a_root_names_its_place_in_the_batch() -> None:
    batch = torch.tensor([[[4.0, 0.0], [0.0, 9.0]], [[0.0, 1.0], [0.0, 0.0]]])
    with pytest.raises(npgrad.errors.InputError, match='input "a" has no square root') as info:
        sqrtm(batch)
    assert "in batch element (1,) of the batch dims (2,)" in info.value.__notes__


def test_an_empty_batch_of_matrices() -> None:
    a = torch.zeros(0, 3, 3, dtype=torch.float64, requires_grad=True)
    out = sqrtm(a)
    assert out.shape == (0, 3, 3)
    (g,) = torch.autograd.grad(out.sum(), a)
    assert g.shape == (0, 3, 3)
