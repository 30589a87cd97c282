"""torch.func and forward-mode AD, against torch-native references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import grad, jacfwd, jacrev, jvp, vmap

import npgrad

# Defined once for the module: names are unique per process.


@npgrad.op("func::dot", signature="(n),(n)->()")
def dot(x, y):
    return np.dot(x, y)


@dot.backward
def _(g, x, y):
    return g * y, g * x


@dot.jvp
def _(tx, ty, x, y):
    return np.dot(tx, y) + np.dot(x, ty)


@npgrad.op("func::matvec", signature="(m,n),(n)->(m)")
def matvec(a, x):
    return a @ x


@matvec.backward
def _(g, a, x):
    return np.outer(g, x), a.T @ g


@matvec.jvp
def _(ta, tx, a, x):
    return ta @ x + a @ tx


@npgrad.op("func::softplus")
def softplus(x):
    return np.logaddexp(0, x)


@softplus.backward
def _(g, x):
    return g / (1 + np.exp(-x))


@softplus.jvp
def _(t, x):
    return t / (1 + np.exp(-x))


def f64(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64)


def test_signature_broadcasts_batch_dims() -> None:
    a, x = f64(4, 1, 3, 5), f64(2, 5)
    torch.testing.assert_close(matvec(a, x), torch.einsum("...mn,...n->...m", a, x))


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


def test_grad_jacrev_jacfwd_match_torch() -> None:
    a, x = f64(3, 4), f64(4)
    torch.testing.assert_close(grad(lambda v: matvec(a, v).sum())(x), a.sum(0))
    torch.testing.assert_close(jacrev(matvec, argnums=1)(a, x), a)
    torch.testing.assert_close(jacfwd(matvec, argnums=1)(a, x), a)
    torch.testing.assert_close(jacrev(matvec)(a, x), jacrev(torch.mv)(a, x))
    torch.testing.assert_close(jacfwd(softplus)(x), jacfwd(torch.nn.functional.softplus)(x))


def test_vmap_of_grad() -> None:
    xs, y = f64(6, 3), f64(3)
    torch.testing.assert_close(vmap(grad(dot), in_dims=(0, None))(xs, y), y.expand(6, 3))
    torch.testing.assert_close(vmap(grad(lambda v: softplus(v).sum()))(xs), torch.sigmoid(xs))


def test_forward_mode() -> None:
    a, x, t = f64(3, 4), f64(4), f64(4)
    _out, tangent = jvp(lambda v: matvec(a, v), (x,), (t,))
    torch.testing.assert_close(tangent, a @ t)
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, t)
        torch.testing.assert_close(fwAD.unpack_dual(softplus(dual)).tangent, torch.sigmoid(x) * t)
    args = (a.requires_grad_(), x.requires_grad_())
    assert torch.autograd.gradcheck(matvec, args, check_forward_ad=True)


def test_forward_mode_without_jvp_says_how_to_add_one(name: str) -> None:
    @npgrad.op(name)
    def double(x):
        return 2 * x

    with pytest.raises(
        npgrad.NpgradError, match=rf'npgrad op "{name}": forward-mode AD .*@double\.jvp'
    ):
        jvp(double, (f64(3),), (f64(3),))


def test_numpy_backward_refuses_second_order_under_torch_func() -> None:
    with pytest.raises(
        npgrad.NpgradError, match=r'"func::softplus": asked for a second derivative'
    ):
        jacrev(jacrev(softplus))(f64(3))


def test_bad_signatures_are_refused(name: str) -> None:
    with pytest.raises(npgrad.NpgradError, match=r"signature '\(n\)->' is not of the form"):
        npgrad.op(name, signature="(n)->")(lambda x: x)
    with pytest.raises(
        npgrad.NpgradError, match=r'signature "\(n\)->\(n\)" has 1 inputs, the function 2'
    ):
        npgrad.op(name + "_2", signature="(n)->(n)")(lambda x, y: x)
    with pytest.raises(npgrad.NpgradError, match=r'core dim "n" of input 1 has size 4'):
        dot(f64(3), f64(4))


def test_autocast_leaves_npgrad_ops_in_their_inputs_dtype() -> None:
    x = torch.randn(3, 4)
    w = torch.randn(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = x @ w  # autocast makes this bfloat16
        out = softplus(hidden)
        plain = softplus(x)
    assert hidden.dtype == out.dtype == torch.bfloat16
    assert plain.dtype == torch.float32
    torch.testing.assert_close(
        out.float(), torch.nn.functional.softplus(hidden.float()), atol=1e-2, rtol=1e-2
    )


@npgrad.op("func::scaled", signature="(n),()->(n)")
def scaled(x, s):
    return x * s


@scaled.backward
def _(g, x, s):
    return g * s, np.dot(g, x)


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
