"""npgrad_scipy.sparse.spsolve against torch.linalg.solve on the dense matrix."""

from __future__ import annotations

import warnings

import pytest
import torch

import npgrad
from npgrad import _torch_internals as internals
from npgrad_scipy.sparse import laplacian, spsolve


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("columns", [None, 3])
def test_values_and_gradients_match_a_dense_solve(layout: str, columns: int | None) -> None:
    dense = laplacian(5).to_dense() + torch.diag(torch.rand(25, dtype=torch.float64))
    a = (dense.to_sparse() if layout == "coo" else dense.to_sparse_csr()).requires_grad_()
    b = torch.randn(25, *([columns] if columns else []), dtype=torch.float64, requires_grad=True)
    weights = torch.randn(b.shape, dtype=torch.float64)
    x = spsolve(a, b)
    (x * weights).sum().backward()
    reference_a = dense.clone().requires_grad_()
    reference_b = b.detach().clone().requires_grad_()
    expected = torch.linalg.solve(reference_a, reference_b)
    (expected * weights).sum().backward()
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(b.grad, reference_b.grad)
    assert a.grad.layout == a.layout
    # The gradient of A's stored values: the dense gradient on A's sparsity pattern.
    torch.testing.assert_close(a.grad.to_dense(), reference_a.grad * (dense != 0))


def test_check_passes_with_sparse_inputs() -> None:
    op = npgrad.get("scipy::spsolve")
    args, kwargs = op.examples[0]()
    assert npgrad.check(op, *args, **kwargs).verdicts["gradcheck"] == "passed"


def test_singular_and_non_square_matrices_are_refused() -> None:
    singular = torch.zeros(3, 3).to_sparse()
    with pytest.raises(npgrad.NpgradError, match='input "a" cannot be factorised'):
        spsolve(singular, torch.ones(3))
    with pytest.raises(
        npgrad.NpgradError, match=r'input "a" has shape \(2, 3\); expected a square matrix'
    ):
        spsolve(torch.ones(2, 3).to_sparse(), torch.ones(2))


def test_the_factorisation_is_reused_by_the_backward(monkeypatch: pytest.MonkeyPatch) -> None:
    import scipy.sparse.linalg

    from npgrad_scipy import sparse

    calls = []
    real = scipy.sparse.linalg.splu

    def counting(matrix):
        calls.append(matrix.shape)
        return real(matrix)

    monkeypatch.setattr(sparse.scipy.sparse.linalg, "splu", counting)
    a = laplacian(4).requires_grad_()
    b = torch.randn(16, dtype=torch.float64, requires_grad=True)
    spsolve(a, b).sum().backward()
    assert len(calls) == 1
    # The LU is a residual of the call: the companion's path (create_graph=True) takes it too.
    calls.clear()
    (gradient,) = torch.autograd.grad(spsolve(a, b).sum(), b, create_graph=True)
    assert len(calls) == 1
    torch.testing.assert_close(gradient, b.grad)


def test_every_order_through_the_same_factorisation() -> None:
    # The backward is lu_solve, an op with a gradient: gradgradcheck in b (torch's
    # gradgradcheck takes no sparse gradients), and for a dense A in both.
    a = laplacian(3)
    b = torch.randn(9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda v: spsolve(a, v), (b,))
    dense = (laplacian(3).to_dense() + 0.1 * torch.rand(9, 9, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(spsolve, (dense, b), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(spsolve, (dense, b))
    # Forward mode with a sparse A, dx = A^-1 (db - dA x), through forward_ad (torch.func does
    # not take sparse CSR tensors).
    t = torch.randn(9, dtype=torch.float64)
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(b.detach(), t)
        tangent = torch.autograd.forward_ad.unpack_dual(spsolve(a, dual)).tangent
    torch.testing.assert_close(tangent, torch.linalg.solve(a.to_dense(), t))


@pytest.mark.skipif(not internals.ENABLED, reason="forward mode under torch.func")
def test_forward_over_forward_is_exact_through_the_tensor_jvp() -> None:
    # The oracle is the inverse: torch.linalg.solve's own forward over forward is wrong in
    # torch 2.13 (it differs from its reverse mode by 0.08 on this matrix).
    a = laplacian(3).to_dense() + 0.1 * torch.rand(9, 9, dtype=torch.float64)
    b = torch.randn(9, 2, dtype=torch.float64)

    def ours(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return spsolve(m, v).sin().sum()

    def oracle(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (torch.linalg.inv(m) @ v).sin().sum()

    for wrt in (0, 1):
        expected = torch.func.jacrev(torch.func.jacrev(oracle, wrt), wrt)(a, b)
        got = torch.func.jacfwd(torch.func.jacfwd(ours, wrt), wrt)(a, b)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(not internals.ENABLED, reason="forward mode under torch.func")
def test_forward_mode_with_a_constant_sparse_coo_matrix_under_torch_func() -> None:
    a = laplacian(3).to_dense().to_sparse()
    b, t = torch.randn(9, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    _, tangent = torch.func.jvp(lambda v: spsolve(a, v), (b,), (t,))
    torch.testing.assert_close(tangent, torch.linalg.solve(a.to_dense(), t))


def test_a_right_hand_side_of_the_wrong_length_is_named() -> None:
    with pytest.raises(
        npgrad.errors.InputError,
        match=r'"scipy::spsolve": input "b" has shape \(8,\); expected \(9,\) or \(9, k\)',
    ):
        spsolve(laplacian(3), torch.randn(8, dtype=torch.float64))


def test_masked_gradcheck_and_no_sparse_notices_from_torch() -> None:
    # gradcheck(masked=True) asks for gradients of undefined output gradients: None, not a
    # zero CSR tensor torch cannot check; and npgrad's sparse tensors raise no notice.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = laplacian(3).requires_grad_()
        b = torch.randn(9, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(spsolve, (a, b), masked=True)
        report = npgrad.check(spsolve, laplacian(3), torch.randn(9))
    assert report.verdicts["gradcheck"] == "passed"
    skipped = "skipped: torch.func takes no" if internals.ENABLED else "skipped: needs torch's"
    assert report.verdicts["forward-over-forward"].startswith(skipped)
    assert [str(w.message) for w in caught if "sparse" in str(w.message).lower()] == []


def test_complex_matrices_and_right_hand_sides() -> None:
    dense = laplacian(3).to_dense() + 0.3j * torch.rand(9, 9, dtype=torch.float64)
    b = torch.randn(9, 2, dtype=torch.complex128, requires_grad=True)
    torch.testing.assert_close(spsolve(dense.to_sparse(), b), torch.linalg.solve(dense, b))
    a = dense.clone().requires_grad_()
    assert torch.autograd.gradcheck(spsolve, (a, b))
    assert torch.autograd.gradgradcheck(spsolve, (a, b))
    sparse = dense.to_sparse().requires_grad_()
    assert torch.autograd.gradcheck(spsolve, (sparse, b), masked=True)
