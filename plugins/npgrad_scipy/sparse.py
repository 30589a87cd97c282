"""``spsolve``: sparse direct solves with ``scipy.sparse.linalg``, factorised once.

``x = spsolve(A, b)`` takes ``A`` as a torch sparse tensor (COO or CSR; a dense one works too)
and ``b`` as a vector or a matrix of right-hand sides. The forward factorises ``A`` once
(``splu``) and keeps the factorisation as a residual of the call (``@spsolve.save``). The
backward solves the adjoint system ``A^T u = g`` with that same factorisation, through
``lu_solve``, an op of its own: ``dL/db = u`` and ``dL/dA = -u x^T`` restricted to ``A``'s
sparsity pattern (a sparse tensor of ``A``'s layout with ``A``'s pattern). ``lu_solve``'s own
gradient is a solve with the other orientation and the same factorisation, so every order
comes free. Forward mode, ``dx = A^{-1} (db - dA x)``, is ``lu_solve`` again with the same
factorisation (a tensor jvp), so it too holds to any order: forward over forward included.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

import npgrad
from npgrad.errors import InputError

Array = np.ndarray[Any, Any]


def _factorise(a: Any) -> Any:
    matrix = scipy.sparse.csc_matrix(a)
    if matrix.shape[0] != matrix.shape[1]:
        raise InputError(
            f'npgrad op "scipy::spsolve": input "a" has shape {matrix.shape}; expected a square '
            f"matrix"
        )
    try:
        return scipy.sparse.linalg.splu(matrix)
    except RuntimeError as error:  # "Factor is exactly singular"
        raise InputError(
            f'npgrad op "scipy::spsolve": input "a" cannot be factorised ({error}); expected a '
            f"non-singular matrix"
        ) from error


def _solve(lu: Any, b: Array, trans: str = "N", op: str = "spsolve") -> Array:
    n = lu.shape[0]
    if b.ndim not in (1, 2) or b.shape[0] != n:
        raise InputError(
            f'npgrad op "scipy::{op}": input "b" has shape {b.shape}; expected ({n},) or '
            f"({n}, k), as many rows as A has"
        )
    return lu.solve(np.asarray(b, dtype=lu.U.dtype), trans=trans)


@npgrad.op("scipy::spsolve")
def spsolve(a: Any, b: Array) -> Array:
    """Solve ``A x = b`` for a sparse ``A``.

    Args:
        a: an (n, n) sparse (COO or CSR) or dense tensor.
        b: an (n,) vector or an (n, k) matrix of right-hand sides.

    Examples:
        >>> import torch
        >>> from npgrad_scipy.sparse import spsolve
        >>> a = torch.tensor([[2.0, 0.0], [0.0, 4.0]]).to_sparse()
        >>> spsolve(a, torch.tensor([2.0, 2.0]))
        tensor([1.0000, 0.5000])
    """
    return _solve(_factorise(a), b)


@spsolve.save
def _(a: Any, b: Array) -> tuple[Array, dict[str, Any]]:
    lu = _factorise(a)
    return _solve(lu, b), {"lu": lu}


@spsolve.tensor_backward
def _(
    grad: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    lu: Any,
    needs_input_grad: tuple[bool, ...],
    outputs: torch.Tensor,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    # u = A^{-H} g, with the factorisation of A: conj(A^{-T} conj(g)) (real: A^{-T} g).
    u = lu_solve(a, grad.conj(), factor=lu, transposed=True).conj()
    grad_a = _on_pattern(u, outputs.conj(), a) if needs_input_grad[0] else None
    return grad_a, u


@npgrad.op("scipy::lu_solve")
def lu_solve(a: Any, b: Array, *, factor: Any = None, transposed: bool = False) -> Array:
    """Solve ``A x = b`` (``A^T x = b`` with ``transposed``) with ``factor``, an ``splu`` of A.

    The adjoint solve of `spsolve`, with the factorisation its forward made; without
    ``factor``, A is factorised here.

    Examples:
        >>> import torch
        >>> from npgrad_scipy.sparse import lu_solve
        >>> a = torch.tensor([[2.0, 1.0], [0.0, 4.0]])
        >>> lu_solve(a, torch.tensor([2.0, 4.0]), transposed=True)
        tensor([1.0000, 0.7500])
    """
    lu = _factorise(a) if factor is None else factor
    return _solve(lu, b, "T" if transposed else "N", "lu_solve")


@lu_solve.tensor_backward
def _(
    grad: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    factor: Any = None,
    transposed: bool = False,
    needs_input_grad: tuple[bool, ...],
    outputs: torch.Tensor,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    # x = A^{-1} b: u = A^{-H} g, dL/dA = -u x^H; x = A^{-T} b: u = conj(A^{-1}) g,
    # dL/dA = -conj(x) u^T (real values: the conjugations drop out).
    u = lu_solve(a, grad.conj(), factor=factor, transposed=not transposed).conj()
    grad_a = None
    if needs_input_grad[0]:
        x = outputs.conj()
        grad_a = _on_pattern(x, u, a) if transposed else _on_pattern(u, x, a)
    return grad_a, u


@spsolve.tensor_jvp
def _(
    ta: torch.Tensor, tb: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, lu: Any, outputs: Any
) -> torch.Tensor:
    # dx = A^{-1} (db - dA x): one solve with the forward's factorisation.
    return lu_solve(a, tb - _times(ta, outputs, False), factor=lu)


@lu_solve.tensor_jvp
def _(
    ta: torch.Tensor,
    tb: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    factor: Any = None,
    transposed: bool = False,
    outputs: torch.Tensor,
) -> torch.Tensor:
    change = _times(ta, outputs, transposed)
    return lu_solve(a, tb - change, factor=factor, transposed=transposed)


def _times(a: torch.Tensor, x: torch.Tensor, transposed: bool) -> torch.Tensor:
    """Return ``A x`` (``A^T x`` with ``transposed``) for a dense or sparse ``A``."""
    if a.layout != torch.strided and a._nnz() == 0:
        # The zeros npgrad passes for a constant sparse A: under torch.func, a product with
        # them would need forward mode for sparse tensors, which torch lacks.
        return torch.zeros_like(x)
    if transposed:
        a = a.t() if a.layout == torch.sparse_coo else a.mT
    if a.layout == torch.strided:
        return a @ x
    # torch's sparse products take matrices.
    product = a @ (x if x.dim() == 2 else x[:, None])
    return product if x.dim() == 2 else product[:, 0]


def _on_pattern(left: torch.Tensor, right: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Return ``-left @ right^T`` (vectors: their outer product) at A's stored entries only.

    A sparse tensor of A's layout and pattern for a sparse A; the dense product for a dense A.
    """
    left2 = left if left.dim() == 2 else left[:, None]
    right2 = right if right.dim() == 2 else right[:, None]
    if a.layout == torch.strided:
        return -left2 @ right2.mT
    if a.layout == torch.sparse_csr:
        crow, cols = a.crow_indices(), a.col_indices()
        rows = torch.repeat_interleave(torch.arange(a.shape[0], device=a.device), crow.diff())
        values = -(left2[rows] * right2[cols]).sum(-1)
        return _csr(crow, cols, values, a.shape)
    indices = a.coalesce().indices()
    values = -(left2[indices[0]] * right2[indices[1]]).sum(-1)
    return torch.sparse_coo_tensor(
        indices, values, a.shape, is_coalesced=True, check_invariants=False
    )


def _csr(crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: Any) -> torch.Tensor:
    # A's own pattern: valid by construction, so unchecked; and torch's note that CSR support
    # is in beta is not the user's business.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


@spsolve.shape
def _(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return b


@lu_solve.shape
def _(
    a: tuple[int, ...], b: tuple[int, ...], *, factor: Any = None, transposed: bool = False
) -> Any:
    return b


def laplacian(side: int) -> torch.Tensor:
    """Return the 5-point Laplacian of a side x side grid (plus a small shift) as sparse CSR."""
    one = scipy.sparse.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(side, side))
    eye = scipy.sparse.identity(side)
    matrix = (scipy.sparse.kron(one, eye) + scipy.sparse.kron(eye, one)).tocsr()
    matrix = matrix + 0.01 * scipy.sparse.identity(side * side, format="csr")
    return _csr(
        torch.from_numpy(matrix.indptr).long(),
        torch.from_numpy(matrix.indices).long(),
        torch.from_numpy(matrix.data),
        matrix.shape,
    )


@spsolve.example
def _() -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (laplacian(3).to_dense().to_sparse(), torch.randn(9)), {}


@lu_solve.example
def _() -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (laplacian(3).to_dense() + torch.triu(torch.rand(9, 9)), torch.randn(9, 2)), {
        "transposed": True
    }
