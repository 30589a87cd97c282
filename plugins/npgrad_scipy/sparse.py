"""``spsolve``: sparse direct solves with ``scipy.sparse.linalg``, factorised once.

``x = spsolve(A, b)`` takes ``A`` as a torch sparse tensor (COO or CSR; a dense one works too)
and ``b`` as a vector or a matrix of right-hand sides. The forward factorises ``A`` once
(``splu``) and keeps the factorisation as a residual of the call (``@spsolve.save``), so the
backward's adjoint solve ``A^T u = g`` reuses it. Gradients: ``dL/db = u`` and
``dL/dA = -u x^T`` restricted to ``A``'s sparsity pattern (a sparse tensor of ``A``'s layout
with ``A``'s pattern).
"""

from __future__ import annotations

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
            f'npgrad op "scipy::spsolve": A has shape {matrix.shape}; expected a square matrix'
        )
    try:
        return scipy.sparse.linalg.splu(matrix)
    except RuntimeError as error:  # "Factor is exactly singular"
        raise InputError(
            f'npgrad op "scipy::spsolve": A cannot be factorised ({error}); expected a '
            f"non-singular matrix"
        ) from error


@npgrad.op("scipy::spsolve")
def spsolve(a: Any, b: Array) -> Array:
    """Solve ``A x = b`` for a sparse ``A``.

    Args:
        a: an (n, n) sparse (COO or CSR) or dense tensor.
        b: an (n,) vector or an (n, k) matrix of right-hand sides.

    >>> import torch
    >>> from npgrad_scipy.sparse import spsolve
    >>> a = torch.tensor([[2.0, 0.0], [0.0, 4.0]]).to_sparse()
    >>> spsolve(a, torch.tensor([2.0, 2.0]))
    tensor([1.0000, 0.5000])
    """
    return _solve(a, b)[0]


@spsolve.save
def _(a: Any, b: Array) -> tuple[Array, dict[str, Any]]:
    x, lu = _solve(a, b)
    return x, {"lu": lu}


def _solve(a: Any, b: Array) -> tuple[Array, Any]:
    lu = _factorise(a)
    return lu.solve(np.asarray(b, dtype=lu.U.dtype)), lu


@spsolve.backward
def _(
    grad: Array,
    a: Any,
    b: Array,
    *,
    lu: Any,
    needs_input_grad: tuple[bool, ...],
    outputs: Array,
) -> tuple[Any, Array]:
    u = lu.solve(np.asarray(grad, dtype=lu.U.dtype), trans="T")
    grad_a = None
    if needs_input_grad[0]:
        pattern = scipy.sparse.coo_matrix(a) if scipy.sparse.issparse(a) else None
        if pattern is None:
            grad_a = -np.outer(u, outputs) if u.ndim == 1 else -u @ outputs.T
        else:
            rows, cols = pattern.row, pattern.col
            products = u[rows] * outputs[cols]
            values = -(products if products.ndim == 1 else products.sum(axis=1))
            grad_a = scipy.sparse.csr_matrix((values, (rows, cols)), shape=pattern.shape)
    return grad_a, u


@spsolve.shape
def _(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return b


def laplacian(side: int) -> torch.Tensor:
    """Return the 5-point Laplacian of a side x side grid (plus a small shift) as sparse CSR."""
    one = scipy.sparse.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(side, side))
    eye = scipy.sparse.identity(side)
    matrix = (scipy.sparse.kron(one, eye) + scipy.sparse.kron(eye, one)).tocsr()
    matrix = matrix + 0.01 * scipy.sparse.identity(side * side, format="csr")
    return torch.sparse_csr_tensor(
        torch.from_numpy(matrix.indptr).long(),
        torch.from_numpy(matrix.indices).long(),
        torch.from_numpy(matrix.data),
        matrix.shape,
    )


@spsolve.example
def _() -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (laplacian(3).to_dense().to_sparse(), torch.randn(9)), {}
