"""Forward mode: a jvp, or the transpose of a tensor backward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import jacfwd, jacrev, jvp

import npgrad
from npgrad import _torch_internals as internals

from shared_ops import f64, legacy_batched, matvec, softplus, tcos, tsin


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


@npgrad.op("tangents::affine", signature="(m,n),(n),(m)->(m)")
def affine(a, x, b):
    return a @ x + b


@affine.tensor_backward
def _(g, a, x, b):
    return g[..., :, None] * x[..., None, :], (a * g[..., :, None]).sum(-2), g


def test_a_tensor_backward_gives_forward_mode_by_its_transpose() -> None:
    x, t = f64(5), f64(5)
    if not internals.ENABLED:
        with pytest.raises(npgrad.errors.MissingBackwardError, match="NPGRAD_TORCH_INTERNALS=0"):
            jvp(tsin, (x,), (t,))
        return
    _, tangent = jvp(tsin, (x,), (t,))
    torch.testing.assert_close(tangent, torch.cos(x) * t)
    a, v, b = f64(2, 3, 4), f64(4), f64(3)
    ta, tv, tb = f64(2, 3, 4), f64(4), f64(3)
    _, got = jvp(affine, (a, v, b), (ta, tv, tb))
    _, expected = jvp(lambda a, v, b: a @ v + b, (a, v, b), (ta, tv, tb))
    torch.testing.assert_close(got, expected)
    assert torch.autograd.gradcheck(
        affine, (a.requires_grad_(), v.requires_grad_(), b.requires_grad_()), check_forward_ad=True
    )
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, t)
        torch.testing.assert_close(fwAD.unpack_dual(tcos(dual)).tangent, -torch.sin(x) * t)


def test_forward_over_forward_of_a_transposed_backward_is_exact() -> None:
    x = f64(3)
    if not internals.ENABLED:
        pytest.skip("forward mode from a tensor backward needs torch's internals")
    # torch's own autograd.Function gives zeros here; npgrad must not.
    torch.testing.assert_close(jacfwd(jacfwd(tsin))(x), torch.diag_embed(torch.diag(-torch.sin(x))))
    third = jacfwd(jacfwd(jacfwd(lambda v: tsin(v).sum())))(x)
    torch.testing.assert_close(torch.diagonal(torch.diagonal(third)), -torch.cos(x))


def test_a_numpy_jvp_is_differentiable_once() -> None:
    x, t = f64(3), f64(3)
    with pytest.raises(npgrad.NpgradError, match=r'"shared::softplus": asked for a second'):
        jacfwd(jacfwd(softplus))(x)
    with pytest.raises(npgrad.NpgradError, match=r'"shared::softplus": asked for a second'):
        jacrev(lambda v: jvp(softplus, (v,), (t,))[1].sum())(x)


def test_a_jvp_may_take_the_outputs(name: str) -> None:
    @npgrad.op(name)
    def exp(x):
        return np.exp(x)

    @exp.jvp
    def _(t, x, *, outputs):
        return t * outputs

    x, t = f64(4), f64(4)
    torch.testing.assert_close(jvp(exp, (x,), (t,))[1], torch.exp(x) * t)
    with fwAD.dual_level():
        torch.testing.assert_close(
            fwAD.unpack_dual(exp(fwAD.make_dual(x, t))).tangent, torch.exp(x) * t
        )


def test_batched_forward_gradients() -> None:
    x = f64(4)
    for op, twin in ((softplus, torch.nn.functional.softplus), (tsin, torch.sin)):
        if op is tsin and not internals.ENABLED:
            continue
        with legacy_batched(op is softplus):
            got = torch.autograd.functional.jacobian(op, x, vectorize=True, strategy="forward-mode")
            torch.testing.assert_close(got, torch.autograd.functional.jacobian(twin, x))
            assert torch.autograd.gradcheck(
                op,
                (x.clone().requires_grad_(),),
                check_forward_ad=True,
                check_backward_ad=False,
                check_batched_forward_grad=True,
            )


def test_integer_outputs_have_no_tangent(name: str) -> None:
    @npgrad.op(name)
    def floor_and_frac(x):
        return np.floor(x).astype(np.int64), x - np.floor(x)

    @floor_and_frac.jvp
    def _(t, x):
        return None, t

    x, t = f64(4) * 3, f64(4)
    (whole, _), (t_whole, t_frac) = jvp(floor_and_frac, (x,), (t,))
    assert whole.dtype == torch.int64
    # torch.func gives integer outputs a zero tangent of their own dtype, forward_ad none.
    assert t_whole.dtype == torch.int64
    assert not t_whole.any()
    torch.testing.assert_close(t_frac, t)
    with fwAD.dual_level():
        outputs = floor_and_frac(fwAD.make_dual(x, t))
        assert fwAD.unpack_dual(outputs[0]).tangent is None
        torch.testing.assert_close(fwAD.unpack_dual(outputs[1]).tangent, t)


def test_a_jvp_returning_the_wrong_tangents_is_named(name: str) -> None:
    @npgrad.op(name)
    def twice(x):
        return 2 * x

    @twice.jvp
    def _(t, x):
        return np.ones(7)

    @npgrad.op(name + "_none")
    def pair(x):
        return x, 2 * x

    @pair.jvp
    def _(t, x):
        return t, None

    @npgrad.op(name + "_scalar")
    def shift(x):
        return x + 1

    @shift.jvp
    def _(t, x):
        return np.float64(t.sum())  # a constant tangent: broadcast to the output

    x, t = f64(3), f64(3)
    with pytest.raises(
        npgrad.errors.GradientError,
        match=rf'npgrad op "{name}": jvp returned a tangent of shape \(7,\) for output 0 of '
        r"shape \(3,\)",
    ):
        jvp(twice, (x,), (t,))
    with pytest.raises(
        npgrad.errors.GradientError,
        match=rf'npgrad op "{name}_none": jvp returned None as the tangent of output 1',
    ):
        jvp(pair, (x,), (t,))
    torch.testing.assert_close(jvp(shift, (x,), (t,))[1], t.sum().expand(3))


def test_a_transposed_backward_skips_integer_outputs(name: str) -> None:
    @npgrad.op(name)
    def sign_and_square(x):
        return np.sign(x).astype(np.int64), x * x

    @sign_and_square.tensor_backward
    def _(g_sign, g_square, x):
        return 2 * x * g_square

    x, t = f64(4), f64(4)
    if not internals.ENABLED:
        pytest.skip("forward mode from a tensor backward needs torch's internals")
    (_, square), (_, t_square) = jvp(sign_and_square, (x,), (t,))
    torch.testing.assert_close(square, x * x)
    torch.testing.assert_close(t_square, 2 * x * t)


def test_a_tensor_jvp_is_differentiable_to_any_order(name: str) -> None:
    @npgrad.op(name)
    def cube(x, y):
        return x**3 * y

    @cube.tensor_jvp
    def _(tx, ty, x, y, *, outputs):
        return 3 * x**2 * y * tx + outputs / y * ty

    @cube.tensor_backward
    def _(g, x, y):
        return 3 * x**2 * y * g, x**3 * g

    x, y = f64(4), f64(4)
    with fwAD.dual_level():  # one level of eager forward mode, with the internals or not
        dual = fwAD.make_dual(x, torch.ones(4, dtype=torch.float64))
        torch.testing.assert_close(fwAD.unpack_dual(cube(dual, y)).tangent, 3 * x**2 * y)
    args = (x.clone().requires_grad_(), y.clone().requires_grad_())
    assert torch.autograd.gradcheck(cube, args, check_forward_ad=True)
    if not internals.ENABLED:
        with pytest.raises(npgrad.errors.MissingBackwardError, match="NPGRAD_TORCH_INTERNALS=0"):
            jvp(lambda v: cube(v, y), (x,), (x,))
        return

    def ours(v: torch.Tensor) -> torch.Tensor:
        return cube(v, y).sum()

    def torchs(v: torch.Tensor) -> torch.Tensor:
        return (v**3 * y).sum()

    hessian, third = jacrev(jacrev(torchs))(x), jacrev(jacrev(jacrev(torchs)))(x)
    torch.testing.assert_close(jacfwd(jacfwd(ours))(x), hessian)
    torch.testing.assert_close(jacrev(jacfwd(ours))(x), hessian)
    torch.testing.assert_close(jacfwd(jacfwd(jacfwd(ours)))(x), third)


def test_an_op_takes_one_jvp(name: str) -> None:
    @npgrad.op(name)
    def twice(x):
        return 2 * x

    @twice.jvp
    def _(t, x):
        return 2 * t

    with pytest.raises(
        npgrad.errors.DefinitionError,
        match=rf'npgrad op "{name}": a jvp is already registered; register one jvp \(NumPy or '
        r"tensor\), not several",
    ):
        twice.tensor_jvp(lambda t, x: 2 * t)


def test_a_tensor_jvp_returning_the_wrong_tangents_is_named(name: str) -> None:
    @npgrad.op(name)
    def pair(x):
        return x, 2 * x

    @pair.tensor_jvp
    def _(t, x):
        return (t,)

    @npgrad.op(name + "_none")
    def double(x):
        return 2 * x

    @double.tensor_jvp
    def _(t, x):
        return None

    x, t = f64(3), f64(3)
    with fwAD.dual_level():
        with pytest.raises(
            npgrad.errors.GradientError,
            match=rf'npgrad op "{name}": jvp returned 1 tangent\(s\) for 2 output\(s\)',
        ):
            pair(fwAD.make_dual(x, t))
        with pytest.raises(
            npgrad.errors.GradientError,
            match=rf'npgrad op "{name}_none": jvp returned None as the tangent of output 0',
        ):
            double(fwAD.make_dual(x, t))
