"""``sqrtm`` from ``scipy.linalg``, its gradient through a Sylvester equation.

For ``X = sqrtm(A)``, differentiating ``X X = A`` gives ``X dX + dX X = dA``. Forward mode solves
that Sylvester equation for ``dX``; the backward solves its adjoint, ``X^T G_A + G_A X^T = G``,
for the gradient ``G_A`` of ``A`` (``scipy.linalg.solve_sylvester``). Batches of matrices are
looped (signature ``(n,n)->(n,n)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
import torch

import npgrad
from npgrad.errors import InputError

Array = np.ndarray[Any, Any]


@npgrad.op("scipy::sqrtm", signature="(n,n)->(n,n)")
def sqrtm(a: Array) -> Array:
    """Return the principal square root of the square matrix ``a`` (real results only).

    >>> import torch
    >>> from npgrad_scipy.linalg import sqrtm
    >>> sqrtm(torch.tensor([[4.0, 0.0], [0.0, 9.0]]))
    tensor([[2., 0.],
            [0., 3.]])
    """
    root = scipy.linalg.sqrtm(a)
    if np.iscomplexobj(root):
        if np.abs(root.imag).max(initial=0.0) > 1e-8 * max(np.abs(root).max(initial=0.0), 1.0):
            raise InputError(
                'npgrad op "scipy::sqrtm": the principal square root of this matrix is complex '
                "(it has negative real eigenvalues); expected a matrix with a real square root, "
                "e.g. symmetric positive definite"
            )
        root = root.real
    return root


@sqrtm.backward
def _(grad: Array, a: Array, *, outputs: Array) -> Array:
    return scipy.linalg.solve_sylvester(outputs.T, outputs.T, grad)


@sqrtm.jvp
def _(tangent: Array, a: Array) -> Array:
    root = sqrtm.forward(a)
    return scipy.linalg.solve_sylvester(root, root, tangent)


@sqrtm.example
def _() -> tuple[tuple[Any, ...], dict[str, Any]]:
    m = torch.randn(4, 4)
    return (m @ m.T + 4 * torch.eye(4),), {}
