"""Gradients from NumPy and tensor backwards and per-input vjps; second derivatives."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import jacfwd, jacrev

import npgrad
from npgrad import _torch_internals as internals

from shared_ops import f64, legacy_batched, make_mul, tcos, tsin


def test_only_needed_gradients_are_computed(name: str) -> None:
    calls: list[tuple[bool, ...]] = []
    mul = make_mul(name, calls)
    x = torch.randn(3, requires_grad=True)
    w = torch.randn(3, requires_grad=True)
    mul(x, w.detach()).sum().backward()
    mul(x.detach(), w).sum().backward()
    mul(x, w).sum().backward()
    assert calls == [(True, False), (False, True), (True, True)]


def test_per_input_vjps_are_called_only_when_needed(name: str) -> None:
    calls = {"x": 0, "w": 0}

    @npgrad.op(name)
    def mul(x, w):
        return x * w

    @mul.vjp("x")
    def _(grad, x, w):
        calls["x"] += 1
        return grad * w

    @mul.vjp(1)
    def _(grad, x, w):
        calls["w"] += 1
        return grad * x

    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    mul(x, w.detach()).sum().backward()
    assert calls == {"x": 1, "w": 0}
    mul(x.detach(), w).sum().backward()
    assert calls == {"x": 1, "w": 1}
    assert torch.autograd.gradcheck(mul, (x, w))


def test_missing_vjp_names_the_input(name: str) -> None:
    @npgrad.op(name)
    def mul(x, w):
        return x * w

    @mul.vjp("x")
    def _(grad, x, w):
        return grad * w

    w = torch.randn(3, requires_grad=True)
    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}": a gradient was asked for input "w" \(position 1\), but no '
        r'backward is registered for it; register one with @mul.vjp\("w"\)',
    ):
        mul(torch.randn(3), w).sum().backward()


def test_wrong_number_of_gradients_is_an_error(name: str) -> None:
    @npgrad.op(name)
    def add(x, w, b):
        return x + w + b

    @add.backward
    def _(grad, x, w, b):
        return grad, grad

    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}": backward returned 2 gradients for 3 positional inputs '
        r"\(x, w, b\); return one gradient per input, in order, with None",
    ):
        add(torch.ones(2, requires_grad=True), torch.ones(2), torch.ones(2)).sum().backward()


def test_single_gradient_for_several_inputs_is_an_error(name: str) -> None:
    @npgrad.op(name)
    def add(x, w):
        return x + w

    @add.backward
    def _(grad, x, w):
        return grad

    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}": backward returned a single ndarray for 2 positional inputs',
    ):
        add(torch.ones(2, requires_grad=True), torch.ones(2)).sum().backward()


def test_missing_backward_says_how_to_register_one(name: str) -> None:
    @npgrad.op(name)
    def square(x):
        return x * x

    y = square(torch.ones(2, requires_grad=True))  # the forward alone is fine
    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}": a gradient was asked for input "x" \(position 0\), but no '
        r"backward is registered for it; register one with @square.backward",
    ):
        y.sum().backward()


def test_backward_exceptions_keep_their_type_and_gain_a_note(name: str) -> None:
    @npgrad.op(name)
    def fine(x):
        return x

    @fine.backward
    def _(grad, x):
        raise ZeroDivisionError("backward broke")

    with pytest.raises(ZeroDivisionError, match="backward broke") as info:
        fine(torch.ones(1, requires_grad=True)).sum().backward()
    assert any(f'backward of npgrad op "{name}"' in note for note in info.value.__notes__)


def test_config_reaches_forward_and_backward(name: str) -> None:
    @npgrad.op(name)
    def power(x, *, p=2):
        return x**p

    @power.backward
    def _(grad, x, *, p=2):
        return grad * p * x ** (p - 1)

    x = torch.rand(3, dtype=torch.float64, requires_grad=True) + 0.5
    torch.testing.assert_close(power(x, p=3), x**3)
    assert torch.autograd.gradcheck(lambda t: power(t, p=3), (x,))


def test_second_derivative_of_a_numpy_backward_is_refused(name: str) -> None:
    mul = make_mul(name)
    x = torch.randn(3, requires_grad=True)
    (gx,) = torch.autograd.grad(mul(x, x).sum(), (x,), create_graph=True)
    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}": asked for a second derivative, but its gradient rules are '
        r"written in NumPy and are differentiable once",
    ):
        gx.sum().backward()


def test_tensor_backward_is_differentiable_again(name: str) -> None:
    @npgrad.op(name)
    def sin(x):
        return np.sin(x)

    @sin.tensor_backward
    def _(grad, x):
        return grad * torch.cos(x)

    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sin, (x,))
    assert torch.autograd.gradgradcheck(sin, (x,))
    assert npgrad.check(sin, x).verdicts["gradgradcheck"] == "passed"


# --- second derivatives, through every door ------------------------------------------------
#
# The same scalar function written three ways: through an op whose gradients are NumPy (each
# door must raise NotTwiceDifferentiableError naming it), through ops whose backward is made
# of ops (each door must give the torch-native twin's values, and finite differences').


@npgrad.op("second::cube")
def cube(x):
    return x**3


@cube.backward
def _(g, x):
    return 3 * x**2 * g


@cube.jvp
def _(t, x):
    return 3 * x**2 * t


@npgrad.op("second::mul")
def tmul(x, w):
    return x * w


@tmul.tensor_backward
def _(g, x, w, *, needs_input_grad):
    return (g * w if needs_input_grad[0] else None), (g * x if needs_input_grad[1] else None)


def numpy_scalar(v: torch.Tensor) -> torch.Tensor:
    # x*x inside, torch ops around, the op twice in a chain.
    return (cube(v * v) * v.sin()).sum() + cube(cube(v)).mean()


def tensor_scalar(v: torch.Tensor) -> torch.Tensor:
    return (tmul(tsin(v * v), v.exp()) + tcos(tsin(v))).sum()


def twin_scalar(v: torch.Tensor) -> torch.Tensor:
    return (torch.sin(v * v) * v.exp() + torch.cos(torch.sin(v))).sum()


def grad_of(f):
    return lambda v: torch.autograd.grad(f(v), v, create_graph=True)[0]


def forward_over_reverse(f, x: torch.Tensor) -> torch.Tensor:
    """The Hessian's columns by forward-mode AD through a reverse-mode gradient."""
    columns = []
    for k in range(x.numel()):
        with fwAD.dual_level():
            dual = fwAD.make_dual(
                x.detach().requires_grad_(), torch.eye(x.numel(), dtype=x.dtype)[k]
            )
            (g,) = torch.autograd.grad(f(dual), dual, create_graph=True)
            columns.append(fwAD.unpack_dual(g).tangent)
    return torch.stack(columns, 1)


def backward_after_create_graph(f, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_()
    (g,) = torch.autograd.grad(f(x), x, create_graph=True)
    g.sum().backward()
    return x.grad


HESSIAN_DOORS = {
    "autograd.grad twice": lambda f, x: torch.autograd.functional.jacobian(grad_of(f), x),
    "backward after create_graph": lambda f, x: torch.diag(backward_after_create_graph(f, x)),
    "functional.hessian": lambda f, x: torch.autograd.functional.hessian(f, x),
    "functional.hessian vectorized": lambda f, x: torch.autograd.functional.hessian(
        f, x, vectorize=True
    ),
    "functional.hvp": lambda f, x: torch.stack(
        [torch.autograd.functional.hvp(f, x, e)[1] for e in torch.eye(x.numel(), dtype=x.dtype)]
    ),
    "functional.vhp": lambda f, x: torch.stack(
        [torch.autograd.functional.vhp(f, x, e)[1] for e in torch.eye(x.numel(), dtype=x.dtype)]
    ),
    "func.hessian": lambda f, x: torch.func.hessian(f)(x),
    "jacfwd(jacrev)": lambda f, x: jacfwd(jacrev(f))(x),
    "jacrev(jacrev)": lambda f, x: jacrev(jacrev(f))(x),
    "jacrev(jacfwd)": lambda f, x: jacrev(jacfwd(f))(x),
    "jacfwd(jacfwd)": lambda f, x: jacfwd(jacfwd(f))(x),
    "forward over reverse": forward_over_reverse,
}


def finite_difference_hessian(f, x: torch.Tensor, h: float = 1e-4) -> torch.Tensor:
    n = x.numel()
    eye = torch.eye(n, dtype=x.dtype) * h
    hessian = torch.empty(n, n, dtype=x.dtype)
    with torch.no_grad():
        for i in range(n):
            for j in range(n):
                hessian[i, j] = (
                    f(x + eye[i] + eye[j])
                    - f(x + eye[i] - eye[j])
                    - f(x - eye[i] + eye[j])
                    + f(x - eye[i] - eye[j])
                ) / (4 * h * h)
    return hessian


@pytest.mark.parametrize("door", HESSIAN_DOORS)
def test_a_numpy_backward_raises_the_named_error_through_every_door(door: str) -> None:
    x = f64(4).requires_grad_()
    with pytest.raises(
        npgrad.errors.NotTwiceDifferentiableError,
        match=r'npgrad op "second::cube": asked for a second derivative, but its gradient rules '
        r"are written in NumPy and are differentiable once; write the backward with npgrad ops "
        r"and torch ops on tensors \(@cube.tensor_backward\)",
    ):
        HESSIAN_DOORS[door](numpy_scalar, x)


# Doors that take forward mode through the ops under torch.func: from a tensor backward, it
# needs torch's internals (see _torch_internals); without them it is a named error.
FORWARD_DOORS = {"func.hessian", "jacfwd(jacrev)", "jacrev(jacfwd)", "jacfwd(jacfwd)"}


@pytest.mark.parametrize("door", HESSIAN_DOORS)
def test_a_tensor_backward_gives_the_twins_hessian_through_every_door(door: str) -> None:
    x = (0.3 * f64(4)).requires_grad_()
    if door in FORWARD_DOORS and not internals.ENABLED:
        with pytest.raises(npgrad.errors.MissingBackwardError, match="NPGRAD_TORCH_INTERNALS=0"):
            HESSIAN_DOORS[door](tensor_scalar, x)
        return
    got = HESSIAN_DOORS[door](tensor_scalar, x)
    expected = (
        HESSIAN_DOORS[door](twin_scalar, x) if door != "backward after create_graph" else None
    )
    if expected is None:  # x.grad of the gradient's sum: the Hessian's row sums
        expected = torch.diag(backward_after_create_graph(twin_scalar, x))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    if door != "backward after create_graph":
        fd = finite_difference_hessian(twin_scalar, x.detach())
        torch.testing.assert_close(got.detach(), fd, rtol=1e-6, atol=1e-6)


def test_gradgradcheck_names_the_op_or_passes() -> None:
    x = f64(3).requires_grad_()
    with pytest.raises(npgrad.NpgradError, match=r'"second::cube": asked for a second derivative'):
        torch.autograd.gradgradcheck(cube, (x,))
    w = f64(3).requires_grad_()
    assert torch.autograd.gradgradcheck(tmul, (x, w))
    assert torch.autograd.gradgradcheck(tsin, (x,))


def test_differentiating_the_gradient_by_the_output_gradient_is_refused_too() -> None:
    # The double-backward trick of autograd.functional.jvp differentiates the backward by its
    # output gradient alone: NumPy cannot, so it is the named error, never zeros.
    x = f64(3)
    with pytest.raises(npgrad.NpgradError, match=r'"second::cube": asked for a second'):
        torch.autograd.functional.jvp(cube, x, torch.ones(3, dtype=torch.float64))
    _, tangent = torch.autograd.functional.jvp(tsin, x, torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(tangent, torch.cos(x))


def test_without_a_jvp_torch_func_hessian_asks_for_one(name: str) -> None:
    square = make_mul(name)
    with pytest.raises(
        npgrad.errors.MissingBackwardError,
        match=rf'npgrad op "{name}": forward-mode AD .* needs a jvp, and none is registered',
    ):
        torch.func.hessian(lambda v: square(v, v).sum())(f64(3))


class Critic(torch.nn.Module):
    def __init__(self, activation) -> None:
        super().__init__()
        self.first = torch.nn.Linear(3, 5, dtype=torch.float64)
        self.second = torch.nn.Linear(5, 1, dtype=torch.float64)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.activation(self.first(x)))


def gradient_penalty(critic: Critic, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_()
    (g,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return (g.norm(dim=1) - 1).pow(2).mean()


def test_a_gradient_penalty_reaches_every_parameter_or_names_the_op() -> None:
    x = f64(8, 3)
    ours = Critic(lambda h: tsin(h))
    twin = Critic(torch.sin)
    twin.load_state_dict(ours.state_dict())
    gradient_penalty(ours, x).backward()
    gradient_penalty(twin, x).backward()
    for (name, got), (_, expected) in zip(
        ours.named_parameters(), twin.named_parameters(), strict=True
    ):
        if name == "second.bias":  # the critic's gradient does not depend on it
            assert got.grad is None
            assert expected.grad is None
            continue
        assert got.grad is not None, name
        torch.testing.assert_close(got.grad, expected.grad, rtol=1e-10, atol=1e-12, msg=name)

    numpy_critic = Critic(lambda h: cube(h))
    with pytest.raises(npgrad.NpgradError, match=r'"second::cube": asked for a second'):
        gradient_penalty(numpy_critic, x).backward()


def test_first_derivatives_through_numpy_stay_fine_in_graph_mode() -> None:
    # create_graph=True alone asks for no second derivative: the first one is right.
    x = f64(4).requires_grad_()
    (g,) = torch.autograd.grad(numpy_scalar(x), x, create_graph=True)
    (expected,) = torch.autograd.grad((((x * x) ** 3) * x.sin()).sum() + ((x**3) ** 3).mean(), x)
    torch.testing.assert_close(g.detach(), expected)


# --- residuals (@op.save) -------------------------------------------------------------------


class Factor:
    """A residual that is no array: what a solver's factorisation looks like."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values


def make_scaled_exp(name: str, log: list[str]) -> npgrad.Op:
    @npgrad.op(name)
    def scaled_exp(x, *, scale=2.0):
        log.append("forward")
        return scale * np.exp(x)

    @scaled_exp.save
    def _(x, *, scale=2.0):
        log.append("save")
        e = np.exp(x)
        return scale * e, {"e": e, "factor": Factor(e)}

    @scaled_exp.backward
    def _(grad, x, *, scale=2.0, e, factor):
        log.append("backward")
        assert factor.values is e
        return grad * scale * e

    @scaled_exp.jvp
    def _(t, x, *, scale=2.0, e):
        log.append("jvp")
        return t * scale * e

    return scaled_exp


def test_save_runs_instead_of_the_forward_when_gradients_may_follow(name: str) -> None:
    log: list[str] = []
    op = make_scaled_exp(name, log)
    x = f64(3).requires_grad_()
    op(x.detach())
    # No graph: the plain forward, no residuals kept (with torch's internals off, npgrad
    # cannot tell whether a transform is active, and keeps them).
    assert log == (["forward"] if internals.ENABLED else ["save"])
    log.clear()
    op(x, scale=3.0).sum().backward()
    assert log == ["save", "backward"]
    torch.testing.assert_close(x.grad, 3 * torch.exp(x.detach()))
    log.clear()
    _, tangent = torch.func.jvp(op, (x.detach(),), (torch.ones(3, dtype=torch.float64),))
    assert log == ["save", "jvp"]
    torch.testing.assert_close(tangent, 2 * torch.exp(x.detach()))
    assert torch.autograd.gradcheck(op, (x,), check_forward_ad=True)


def test_residuals_reach_vjps_under_torch_func_and_batched_gradients(name: str) -> None:
    log: list[str] = []
    op = make_scaled_exp(name, log)
    x = f64(4)
    torch.testing.assert_close(torch.func.grad(lambda v: op(v).sum())(x), 2 * torch.exp(x))
    torch.testing.assert_close(torch.func.jacrev(op)(x), torch.diag(2 * torch.exp(x)))
    x.requires_grad_()
    eye = torch.eye(4, dtype=torch.float64)
    with legacy_batched():
        (batched,) = torch.autograd.grad(op(x), x, eye, is_grads_batched=True)
        torch.testing.assert_close(batched, torch.diag(2 * torch.exp(x.detach())))
    with pytest.raises(npgrad.NpgradError, match="asked for a second derivative"):
        torch.autograd.functional.hessian(lambda v: op(v).sum(), x)


def test_residuals_die_with_the_graph(name: str) -> None:
    kept: list[weakref.ref[Factor]] = []

    @npgrad.op(name)
    def ident(x):
        return x.copy()

    @ident.save
    def _(x):
        factor = Factor(x)
        kept.append(weakref.ref(factor))
        return x.copy(), {"factor": factor}

    @ident.backward
    def _(grad, x, *, factor):
        return grad

    y = ident(torch.ones(3, requires_grad=True))
    gc.collect()
    assert kept[0]() is not None  # the graph holds it
    del y
    gc.collect()
    assert kept[0]() is None


@npgrad.op("second::normalise", signature="(n)->(n)")
def normalise(x):
    return x / np.linalg.norm(x)


@normalise.save
def _(x):
    norm = np.linalg.norm(x)
    return x / norm, {"norm": norm}


@normalise.backward
def _(grad, x, *, norm, outputs):
    assert np.ndim(norm) == 0  # one batch element's
    return (grad - outputs * np.dot(grad, outputs)) / norm


def test_looped_ops_get_each_batch_elements_residuals() -> None:
    x = f64(5, 3).requires_grad_()
    twin = x / x.norm(dim=-1, keepdim=True)
    assert torch.autograd.gradcheck(normalise, (x,))
    g = f64(5, 3)
    torch.testing.assert_close(
        torch.autograd.grad(normalise(x), x, g)[0],
        torch.autograd.grad(twin, x, g, retain_graph=True)[0],
    )
    # Batched gradients: a batch of output gradients, each element its own residual.
    gs = f64(2, 5, 3)
    expected = torch.stack([torch.autograd.grad(twin, x, gi, retain_graph=True)[0] for gi in gs])
    with legacy_batched():
        (batched,) = torch.autograd.grad(normalise(x), x, gs, is_grads_batched=True)
        torch.testing.assert_close(batched, expected)
    torch.testing.assert_close(torch.func.jacrev(normalise)(x.detach()).shape, (5, 3, 5, 3))


def test_a_residual_a_rule_needs_but_save_did_not_return_is_named(name: str) -> None:
    @npgrad.op(name)
    def ident(x):
        return x.copy()

    @ident.backward
    def _(grad, x, *, lu):
        return grad

    with pytest.raises(
        npgrad.errors.DefinitionError,
        match=rf"npgrad op \"{name}\": a gradient rule takes keyword-only parameter\(s\) \['lu'\], "
        r"which are neither config nor residuals \(@ident.save returned none\)",
    ):
        ident(torch.ones(2, requires_grad=True)).sum().backward()


def test_none_for_an_input_that_needs_a_gradient_is_an_error_on_every_path(name: str) -> None:
    @npgrad.op(name)
    def mul(x, y):
        return x * y

    @mul.backward
    def _(g, x, y):
        return g * y, None

    x, y = f64(3).requires_grad_(), f64(3).requires_grad_()
    message = (
        rf'npgrad op "{name}": backward returned None as the gradient for input "y" \(position '
        r"1\), which needs one; expected its gradient"
    )
    with pytest.raises(npgrad.errors.GradientError, match=message):
        mul(x, y).sum().backward()
    with pytest.raises(npgrad.errors.GradientError, match=message):
        torch.autograd.grad(mul(x, y).sum(), (x, y), create_graph=True)
    with pytest.raises(npgrad.errors.GradientError, match=message):
        torch.func.grad(lambda a, b: mul(a, b).sum(), argnums=(0, 1))(x.detach(), y.detach())
    (gx,) = torch.autograd.grad(mul(x, y.detach()).sum(), x)  # y needs none: None is fine
    torch.testing.assert_close(gx, y.detach())


def test_a_pullback_called_after_its_transform_reaches_the_real_inputs() -> None:
    # torch.func.vjp's pullback runs later, on the transform's dead wrappers of the inputs;
    # the graph built through it must reach the inputs themselves.
    x = (0.3 * f64(3)).requires_grad_()
    torch.func.jacrev(tsin)(x).sum().backward()
    torch.testing.assert_close(x.grad, -torch.sin(x.detach()))
    assert not torch.func.jacrev(tsin)(x.detach()).requires_grad
    _, pullback = torch.func.vjp(cube, x)
    (g,) = pullback(torch.ones(3, dtype=torch.float64))
    with pytest.raises(npgrad.NpgradError, match=r'"second::cube": asked for a second'):
        torch.autograd.grad(g.sum(), x, allow_unused=True)


def test_a_tensor_subclass_is_a_tensor_like_any_other(name: str) -> None:
    class Tagged(torch.Tensor):
        pass

    x = f64(4).as_subclass(Tagged)
    torch.testing.assert_close(tsin(x), torch.sin(x.as_subclass(torch.Tensor)))
    assert type(tsin(x)) is torch.Tensor


def test_an_empty_batch_gives_empty_results_and_gradients() -> None:
    x = torch.zeros(0, 3, dtype=torch.float64, requires_grad=True)
    y = normalise(x)
    assert y.shape == (0, 3)
    y.sum().backward()
    assert x.grad.shape == (0, 3)
    assert torch.func.vmap(normalise)(torch.zeros(2, 0, 3)).shape == (2, 0, 3)
    assert torch.func.vmap(normalise)(torch.zeros(0, 4, 3)).shape == (0, 4, 3)  # a size-0 vmap


def test_a_nondifferentiable_input_asked_for_a_gradient_or_tangent_is_named(name: str) -> None:
    @npgrad.op(name, nondifferentiable=("n",))
    def power(x, n):
        return x**n

    @power.tensor_backward
    def _(grad, x, n):
        return grad * n * x ** (n - 1), None

    x = torch.tensor([1.5, 2.0], dtype=torch.float64, requires_grad=True)
    n = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(power(x, n.detach()).sum(), x)
    torch.testing.assert_close(g, 3 * x.detach() ** 2)
    message = (
        rf'npgrad op "{name}": a gradient was asked for input "n" \(position 1\), which the op '
        r"does not differentiate \(npgrad.op\(nondifferentiable=...\)\)"
    )
    with pytest.raises(npgrad.errors.MissingBackwardError, match=message):
        power(x, n).sum().backward()
    with pytest.raises(npgrad.errors.MissingBackwardError, match=message):
        torch.func.jvp(lambda e: power(x.detach(), e), (n.detach(),), (torch.ones(()),))


def test_undefined_output_gradients_give_no_gradients(name: str) -> None:
    # torch's gradcheck asks this (check_undefined_grad); a zero sparse gradient fails there.
    @npgrad.op(name)
    def pair(x):
        return x * 2, x * 3

    @pair.backward
    def _(g2, g3, x):
        return 2 * g2 + 3 * g3

    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pair, (x,), check_undefined_grad=True)
    first, _ = pair(x)
    (g,) = torch.autograd.grad(first.sum(), x)  # the second output's gradient is undefined
    torch.testing.assert_close(g, torch.full((3,), 2.0, dtype=torch.float64))


def test_the_common_call_through_every_door(name: str) -> None:
    # The inlined path: every input a CPU float tensor, a NumPy backward, a broadcast bias whose
    # gradient is summed down. Right where it can be, a named error where it cannot: never a
    # silent zero or None.
    @npgrad.op(name)
    def scaled(x, w, b):
        return np.sin(x) * w + b

    @scaled.backward
    def _(grad, x, w, b):
        return grad * np.cos(x) * w, grad * np.sin(x), grad

    def twin(x, w, b):
        return torch.sin(x) * w + b

    gen = torch.Generator().manual_seed(0)
    x, w = (torch.randn(3, 4, dtype=torch.float64, generator=gen) for _ in range(2))
    b = torch.randn(1, 1, dtype=torch.float64, generator=gen)
    inputs = [t.requires_grad_() for t in (x, w, b)]

    def loss(f, *args):
        return (f(*args).tanh() * torch.arange(12.0, dtype=torch.float64).view(3, 4)).sum()

    loss(scaled, *inputs).backward()
    expected = torch.autograd.grad(loss(twin, *inputs), inputs)
    torch.testing.assert_close(tuple(t.grad for t in inputs), expected)
    assert inputs[2].grad.shape == (1, 1)
    torch.testing.assert_close(
        torch.func.grad(lambda *a: loss(scaled, *a), argnums=(0, 1, 2))(x, w, b), expected
    )
    assert torch.autograd.gradcheck(lambda *a: loss(scaled, *a), inputs)
    (gx,) = torch.autograd.grad(loss(scaled, *inputs), inputs[0], create_graph=True)
    with pytest.raises(npgrad.errors.NotTwiceDifferentiableError, match=name):
        torch.autograd.grad(gx.sum(), inputs[0])
    with pytest.raises(npgrad.errors.NotTwiceDifferentiableError, match=name):
        torch.autograd.functional.hessian(lambda v: loss(scaled, v, w, b), x)
    with pytest.raises(npgrad.errors.NotTwiceDifferentiableError, match=name):
        torch.autograd.functional.hvp(lambda v: loss(scaled, v, w, b), x, torch.ones_like(x))
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.ones_like(x))
        with pytest.raises(npgrad.NpgradError, match=name):
            scaled(dual, w, b)
