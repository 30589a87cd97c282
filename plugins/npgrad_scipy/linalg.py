"""``sqrtm`` and ``solve_sylvester`` from ``scipy.linalg``, differentiable to any order.

``X = solve_sylvester(A, B, Q)`` solves ``A X + X B = Q``. Differentiating it,
``A dX + dX B = dQ - dA X - X dB``: forward mode is that Sylvester equation, and the backward
solves its adjoint, ``A^T U + U B^T = G``, for ``U``; then ``dL/dQ = U``, ``dL/dA = -U X^T`` and
``dL/dB = -X^T U``. Both are ``solve_sylvester`` again, so every order comes free.

For ``X = sqrtm(A)``, differentiating ``X X = A`` gives ``X dX + dX X = dA``: the backward is
``solve_sylvester(X^T, X^T, G)``, with ``X`` the op's output (itself differentiable). Batches
of matrices are looped (signatures ``(n,n)->(n,n)`` and ``(n,n),(m,m),(n,m)->(n,m)``); a domain
error says which matrix of the batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
import torch

import npgrad
from npgrad.errors import InputError

Array = np.ndarray[Any, Any]


@npgrad.op("scipy::solve_sylvester", signature="(n,n),(m,m),(n,m)->(n,m)")
def solve_sylvester(a: Array, b: Array, q: Array) -> Array:
    """Solve the Sylvester equation ``A X + X B = Q`` for ``X``.

    Args:
        a: (n, n) matrices.
        b: (m, m) matrices.
        q: (n, m) right-hand sides.

    Examples:
        >>> import torch
        >>> from npgrad_scipy.linalg import solve_sylvester
        >>> solve_sylvester(torch.eye(2), torch.eye(2), torch.ones(2, 2))
        tensor([[0.5000, 0.5000],
                [0.5000, 0.5000]])
    """
    x = scipy.linalg.solve_sylvester(a, b, q)
    if not np.all(np.isfinite(x)):
        raise InputError(
            'npgrad op "scipy::solve_sylvester": inputs "a" and "b" share an eigenvalue pair '
            "summing to zero, so A X + X B = Q has no unique solution; expected A and -B "
            "without a common eigenvalue"
        )
    return x


@solve_sylvester.tensor_backward
def _(
    grad: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    q: torch.Tensor,
    *,
    outputs: torch.Tensor,
    needs_input_grad: tuple[bool, ...],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    # Conjugate transposes: torch's gradient of a holomorphic map (real values: transposes).
    u = solve_sylvester(a.mH, b.mH, grad)
    grad_a = -u @ outputs.mH if needs_input_grad[0] else None
    grad_b = -outputs.mH @ u if needs_input_grad[1] else None
    return grad_a, grad_b, u


@npgrad.op("scipy::sqrtm", signature="(n,n)->(n,n)")
def sqrtm(a: Array) -> Array:
    """Return the principal square root of the square matrix ``a``, as ``scipy.linalg.sqrtm``.

    Real where SciPy's is real; complex for a complex ``a``, or a real ``a`` with negative real
    eigenvalues, as SciPy gives it.

    Examples:
        >>> import torch
        >>> from npgrad_scipy.linalg import sqrtm
        >>> sqrtm(torch.tensor([[4.0, 0.0], [0.0, 9.0]]))
        tensor([[2., 0.],
                [0., 3.]])
    """
    with np.errstate(all="ignore"):
        root = scipy.linalg.sqrtm(a)
    if not np.all(np.isfinite(root)):
        raise InputError(
            f'npgrad op "scipy::sqrtm": input "a" has no square root (a singular matrix with a '
            f"nilpotent part, e.g. [[0, 1], [0, 0]]; got {np.array2string(a, precision=4)}); "
            f"expected a matrix with a square root, e.g. symmetric positive definite"
        )
    # A real matrix: SciPy's root is complex only where it must be (negative real
    # eigenvalues), but may carry rounding-sized imaginary parts otherwise.
    scale = max(np.abs(root).max(initial=0.0), 1.0)
    if (
        np.iscomplexobj(root)
        and not np.iscomplexobj(a)
        and np.abs(root.imag).max(initial=0.0) <= 1e-8 * scale
    ):
        root = root.real
    return root


@sqrtm.tensor_backward
def _(grad: torch.Tensor, a: torch.Tensor, *, outputs: torch.Tensor) -> torch.Tensor:
    # A complex root of a real matrix: npgrad keeps the real part of this gradient for a real a.
    return solve_sylvester(outputs.mH, outputs.mH, grad)


@sqrtm.example
def _() -> tuple[tuple[Any, ...], dict[str, Any]]:
    m = torch.randn(4, 4)
    return (m @ m.T + 4 * torch.eye(4),), {}


@solve_sylvester.example
def _() -> tuple[tuple[Any, ...], dict[str, Any]]:
    return (torch.randn(3, 3) + 3 * torch.eye(3), torch.randn(2, 2) + 3 * torch.eye(2),
            torch.randn(3, 2)), {}  # fmt: skip
