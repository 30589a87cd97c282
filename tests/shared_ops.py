"""Ops shared by several test modules, defined once: names are unique per process."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import numpy as np
import pytest
import torch

import npgrad
from npgrad import _torch_internals as internals


@npgrad.op("shared::dot", signature="(n),(n)->()")
def dot(x, y):
    return np.dot(x, y)


@dot.backward
def _(g, x, y):
    return g * y, g * x


@dot.jvp
def _(tx, ty, x, y):
    return np.dot(tx, y) + np.dot(x, ty)


@npgrad.op("shared::matvec", signature="(m,n),(n)->(m)")
def matvec(a, x):
    return a @ x


@matvec.backward
def _(g, a, x):
    return np.outer(g, x), a.T @ g


@matvec.jvp
def _(ta, tx, a, x):
    return ta @ x + a @ tx


@npgrad.op("shared::softplus")
def softplus(x):
    return np.logaddexp(0, x)


@softplus.backward
def _(g, x):
    return g / (1 + np.exp(-x))


@softplus.jvp
def _(t, x):
    return t / (1 + np.exp(-x))


@npgrad.op("shared::scaled", signature="(n),()->(n)")
def scaled(x, s):
    return x * s


@scaled.backward
def _(g, x, s):
    return g * s, np.dot(g, x)


@npgrad.op("shared::sin")
def tsin(x):
    return np.sin(x)


@npgrad.op("shared::cos")
def tcos(x):
    return np.cos(x)


# Backwards made of ops: both differentiable to any order, forward mode included.
@tsin.tensor_backward
def _(g, x):
    return g * tcos(x)


@tcos.tensor_backward
def _(g, x):
    return -g * tsin(x)


def make_mul(name: str, calls: list[tuple[bool, ...]] | None = None) -> npgrad.Op:
    """Return a new op ``x * w`` whose NumPy backward records which gradients it was asked."""

    @npgrad.op(name)
    def mul(x, w):
        return x * w

    @mul.backward
    def _(grad, x, w, *, needs_input_grad):
        if calls is not None:
            calls.append(needs_input_grad)
        gx = grad * w if needs_input_grad[0] else None
        gw = grad * x if needs_input_grad[1] else None
        return gx, gw

    return mul


def f64(*shape: int) -> torch.Tensor:
    """Return a float64 tensor of standard normal values."""
    return torch.randn(*shape, dtype=torch.float64)


def legacy_batched(numpy_gradients: bool = True) -> AbstractContextManager[object]:
    """Expect torch's legacy batched gradients through NumPy code to work, or, with torch's
    internals off (NPGRAD_TORCH_INTERNALS=0), to be refused with a named error."""
    if internals.ENABLED or not numpy_gradients:
        return nullcontext()
    return pytest.raises(npgrad.NpgradError, match="legacy batched tensors")
