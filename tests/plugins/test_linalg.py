"""npgrad_scipy.linalg.sqrtm against SciPy's values and gradient checks."""

from __future__ import annotations

import pytest
import scipy.linalg
import torch

import npgrad
from npgrad_scipy.linalg import sqrtm


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


def test_complex_roots_are_refused() -> None:
    with pytest.raises(
        npgrad.NpgradError, match="the principal square root of this matrix is complex"
    ):
        sqrtm(torch.tensor([[-1.0, 0.0], [0.0, 1.0]]))


def test_a_hessian_vector_product_is_the_named_error_not_a_wrong_value() -> None:
    s = torch.randn(3, 3, dtype=torch.float64)
    s = s @ s.T + 3 * torch.eye(3, dtype=torch.float64)
    with pytest.raises(
        npgrad.errors.NotTwiceDifferentiableError,
        match=r'npgrad op "scipy::sqrtm": asked for a second derivative',
    ):
        torch.autograd.functional.hvp(lambda m: sqrtm(m @ m).sum(), s, torch.ones_like(s))
