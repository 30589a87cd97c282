"""The vmap rule, through torch.func.vmap and through batched gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import grad, vmap

import npgrad
from npgrad import _torch_internals as internals

from shared_ops import dot, f64, legacy_batched, matvec, scaled, softplus


@pytest.mark.parametrize(("in_dims", "out_dims"), [((0, None), 0), ((1, None), 1), ((0, 0), 0)])
def test_vmap_any_in_and_out_dims(in_dims, out_dims) -> None:
    a, x = f64(3, 4), f64(5, 4)
    a_batch = torch.stack([a + i for i in range(6)], dim=in_dims[0])
    x_arg = x[0] if in_dims[1] is None else torch.stack([x[0] * i for i in range(6)], in_dims[1])
    ours = vmap(matvec, in_dims=in_dims, out_dims=out_dims)(a_batch, x_arg)
    theirs = vmap(torch.mv, in_dims=in_dims, out_dims=out_dims)(a_batch, x_arg)
    torch.testing.assert_close(ours, theirs)


def test_nested_vmap() -> None:
    x, y = f64(2, 5, 3), f64(3)
    torch.testing.assert_close(vmap(vmap(dot, in_dims=(0, None)), in_dims=(0, None))(x, y), x @ y)


def test_vmap_without_signature_loops() -> None:
    x = f64(4, 3)
    torch.testing.assert_close(vmap(softplus)(x), torch.nn.functional.softplus(x))


def test_vmap_of_grad() -> None:
    xs, y = f64(6, 3), f64(3)
    torch.testing.assert_close(vmap(grad(dot), in_dims=(0, None))(xs, y), y.expand(6, 3))
    torch.testing.assert_close(vmap(grad(lambda v: softplus(v).sum()))(xs), torch.sigmoid(xs))


def test_vmap_through_regular_autograd() -> None:
    # Inputs that need gradients outside vmap take the Function path inside it.
    a = f64(6, 3, 4).requires_grad_()
    x = f64(6, 4).requires_grad_()
    vmap(matvec)(a, x).pow(2).sum().backward()
    a_ref, x_ref = a.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    torch.einsum("bmn,bn->bm", a_ref, x_ref).pow(2).sum().backward()
    torch.testing.assert_close(a.grad, a_ref.grad)
    torch.testing.assert_close(x.grad, x_ref.grad)


def test_grad_of_vmap() -> None:
    # vmap innermost, grad around it: the batched inputs are grad-tracked, the general rule.
    xs, y = f64(6, 3), f64(3)
    torch.testing.assert_close(
        grad(lambda v: vmap(dot, in_dims=(0, None))(xs, v).sum())(y), xs.sum(0)
    )
    torch.testing.assert_close(
        grad(lambda m: vmap(matvec)(m, xs[:, :3]).sum())(f64(6, 2, 3)),
        xs[:, None, :3].expand(6, 2, 3),
    )


def test_vmap_over_unequal_batch_ranks_and_numbers() -> None:
    # Extra batch dims on one input, a number beside a tensor: the general vmap rule.
    a, x = f64(5, 2, 3, 4), f64(5, 4)
    torch.testing.assert_close(vmap(matvec)(a, x), torch.einsum("bkmn,bn->bkm", a, x))
    xs = f64(5, 4)
    torch.testing.assert_close(vmap(lambda v: scaled(v, 2.5))(xs), xs * 2.5)
    s = f64(5)
    torch.testing.assert_close(vmap(scaled)(xs, s), xs * s[:, None])


# --- batched gradients: the backward under torch's own batching ------------------------------


@npgrad.op("vmap::tanh")
def tanh(x):
    return np.tanh(x)


@tanh.tensor_backward
def _(g, x, *, outputs):
    return g * (1 - outputs * outputs)


# (op, its torch twin, input shapes): NumPy backwards with and without a signature (one batched
# call, or a loop), and a tensor backward.
CASES = {
    "numpy, signature": (matvec, torch.mv, [(3, 4), (4,)]),
    "numpy, no signature": (softplus, torch.nn.functional.softplus, [(5,)]),
    "numpy, signature with batch dims": (
        matvec,
        lambda a, x: (a @ x[..., None])[..., 0],
        [(2, 3, 4), (4,)],
    ),
    "tensor backward": (tanh, torch.tanh, [(5,)]),
}


@pytest.mark.parametrize("case", CASES)
def test_is_grads_batched(case: str) -> None:
    op, twin, shapes = CASES[case]
    inputs = [f64(*shape).requires_grad_() for shape in shapes]
    out = op(*inputs)
    grads = f64(6, *out.shape)
    with legacy_batched(case != "tensor backward"):
        got = torch.autograd.grad(op(*inputs), inputs, grads, is_grads_batched=True)
    if not internals.ENABLED and case != "tensor backward":
        return
    expected = torch.autograd.grad(twin(*inputs), inputs, grads, is_grads_batched=True)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("case", CASES)
def test_vectorized_jacobian(case: str) -> None:
    op, twin, shapes = CASES[case]
    inputs = tuple(f64(*shape) for shape in shapes)
    with legacy_batched(case != "tensor backward"):
        got = torch.autograd.functional.jacobian(op, inputs, vectorize=True)
    if not internals.ENABLED and case != "tensor backward":
        return
    expected = torch.autograd.functional.jacobian(twin, inputs, vectorize=True)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("case", CASES)
def test_gradcheck_with_batched_gradients(case: str) -> None:
    op, _, shapes = CASES[case]
    inputs = tuple(f64(*shape).requires_grad_() for shape in shapes)
    with legacy_batched(case != "tensor backward"):
        assert torch.autograd.gradcheck(op, inputs, check_batched_grad=True)


@pytest.mark.parametrize("case", CASES)
def test_vmap_over_a_vjp(case: str) -> None:
    op, twin, shapes = CASES[case]
    inputs = tuple(f64(*shape) for shape in shapes)
    out, pullback = torch.func.vjp(op, *inputs)
    _, twin_pullback = torch.func.vjp(twin, *inputs)
    grads = f64(6, *out.shape)
    for g, e in zip(vmap(pullback)(grads), vmap(twin_pullback)(grads), strict=True):
        torch.testing.assert_close(g, e)


def test_a_batched_hessian_of_a_tensor_backward() -> None:
    x = f64(4)
    got = torch.autograd.functional.hessian(lambda v: tanh(v).sum(), x, vectorize=True)
    torch.testing.assert_close(got, torch.diag(-2 * torch.tanh(x) * (1 - torch.tanh(x) ** 2)))


@pytest.mark.parametrize("case", CASES)
def test_batched_gradients_of_non_contiguous_inputs(case: str) -> None:
    # Views (a transpose, a strided slice) have no layout of their own to copy a batched
    # gradient into: the gradient comes back as computed.
    op, twin, shapes = CASES[case]
    inputs = [
        f64(*shape[:-2], shape[-1], shape[-2]).mT if len(shape) > 1 else f64(2 * shape[0])[::2]
        for shape in shapes
    ]
    got = torch.func.jacrev(op, argnums=tuple(range(len(inputs))))(*inputs)
    expected = torch.func.jacrev(twin, argnums=tuple(range(len(inputs))))(*inputs)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)
