"""The autograd side: saving, unneeded gradients, broadcasting, gradient checks, outputs."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch

import npgrad


def make_mul(name: str, calls: list[str] | None = None) -> npgrad.Op:
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


def test_gradients_match_torch(name: str) -> None:
    mul = make_mul(name)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(mul, (x, w))
    gx, gw = torch.autograd.grad(mul(x, w).sum(), (x, w))
    ex, ew = torch.autograd.grad((x * w).sum(), (x, w))
    torch.testing.assert_close(gx, ex)
    torch.testing.assert_close(gw, ew)


def test_no_graph_without_grad(name: str) -> None:
    mul = make_mul(name)
    y = mul(torch.ones(2), torch.ones(2))
    assert y.grad_fn is None
    assert not y.requires_grad
    with torch.no_grad():
        y = mul(torch.ones(2, requires_grad=True), torch.ones(2))
    assert y.grad_fn is None


def test_grad_fn_is_named_after_the_op(name: str) -> None:
    mul = make_mul(name)
    y = mul(torch.ones(2, requires_grad=True), torch.ones(2))
    assert y.grad_fn.name() == f"{name.replace('::', '_')}Backward"


def test_in_place_change_after_forward_raises_at_backward(name: str) -> None:
    mul = make_mul(name)
    x = torch.randn(3, requires_grad=True)
    w = torch.randn(3)
    y = mul(x, w)
    w.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_backward_can_receive_the_outputs(name: str) -> None:
    forwards = []

    @npgrad.op(name)
    def exp(x):
        forwards.append(1)
        return np.exp(x)

    @exp.backward
    def _(grad, x, *, outputs):
        return grad * outputs  # d exp(x) = exp(x), saved instead of recomputed

    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    y = exp(x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.exp(x.detach()))
    assert len(forwards) == 1
    assert torch.autograd.gradcheck(exp, (x,))


def test_backward_receives_a_tuple_of_outputs_for_several(name: str) -> None:
    @npgrad.op(name)
    def polar(x, y):
        return np.hypot(x, y), np.arctan2(y, x)

    @polar.backward
    def _(grad_r, grad_t, x, y, *, outputs):
        r, _ = outputs
        return grad_r * x / r - grad_t * y / r**2, grad_r * y / r + grad_t * x / r**2

    x = torch.rand(4, dtype=torch.float64, requires_grad=True) + 0.5
    y = torch.rand(4, dtype=torch.float64, requires_grad=True) + 0.5
    assert torch.autograd.gradcheck(polar, (x, y))


def test_saved_tensors_die_with_their_graph(name: str) -> None:
    mul = make_mul(name)
    x = torch.randn(100, requires_grad=True)
    w = torch.randn(100)
    alive = weakref.ref(w)
    y = mul(x, w)
    del w
    gc.collect()
    assert alive() is not None  # kept by the graph
    del y
    gc.collect()
    assert alive() is None


def test_saved_outputs_do_not_make_a_cycle(name: str) -> None:
    @npgrad.op(name)
    def exp(x):
        return np.exp(x)

    @exp.backward
    def _(grad, x, *, outputs):
        return grad * outputs

    x = torch.randn(100, requires_grad=True)
    y = exp(x)
    alive = weakref.ref(y)
    gc.disable()
    try:
        del y
        assert alive() is None  # freed by reference counting alone
    finally:
        gc.enable()


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


def test_broadcast_gradients_are_summed_down(name: str) -> None:
    @npgrad.op(name)
    def add(x, b):
        return x + b

    @add.backward
    def _(grad, x, b):
        return grad, grad  # b's gradient has x's shape

    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, 3, dtype=torch.float64, requires_grad=True)
    c = torch.randn((), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(add, (x, b))
    assert torch.autograd.gradcheck(add, (x, c))


def test_gradient_of_a_wrong_shape_is_an_error(name: str) -> None:
    @npgrad.op(name)
    def corr(x, w):
        return x * w.sum()

    @corr.backward
    def _(grad, x, w):
        return grad * w.sum(), np.ones((3, 3))

    w = torch.randn(2, 2, requires_grad=True)
    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}": backward returned a gradient of shape \(3, 3\) for input "w" '
        r"\(position 1\) of shape \(2, 2\); return one gradient per input, shaped like it",
    ):
        corr(torch.randn(4), w).sum().backward()


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


def test_gradient_of_a_wrong_kind_is_an_error(name: str) -> None:
    @npgrad.op(name)
    def ident(x):
        return x

    @ident.backward
    def _(grad, x):
        return "oops"

    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}": backward returned a str as the gradient for input "x"',
    ):
        ident(torch.ones(2, requires_grad=True)).sum().backward()


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


@pytest.mark.parametrize(
    ("result", "got", "fix"),
    [
        (None, "a NoneType", "return the result"),
        ([1.0, 2.0], "a list", "return a tuple of ndarrays"),
        (np.array([object()]), "an array of dtype object", "return real"),
        (np.array(["a"]), "an array of dtype <U1", "return real"),
    ],
    ids=["none", "list", "object", "string"],
)
def test_forward_results_that_are_not_arrays_are_errors(name: str, result, got, fix) -> None:
    @npgrad.op(name)
    def bad(x):
        return result

    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}": forward returned {got} at output 0, expected an ndarray of '
        rf"a real dtype; {fix}",
    ):
        bad(torch.ones(2))


def test_numbers_and_numpy_scalars_are_zero_dim_results(name: str) -> None:
    @npgrad.op(name)
    def total(x):
        return float(x.sum()), np.float64(x.sum())

    a, b = total(torch.ones(3))
    assert a.shape == b.shape == ()
    assert a.dtype == b.dtype == torch.float32


def test_multiple_outputs_with_unused_gradients_arriving_as_zeros(name: str) -> None:
    seen = []

    @npgrad.op(name)
    def sincos(x):
        return np.sin(x), np.cos(x)

    @sincos.backward
    def _(grad_sin, grad_cos, x):
        seen.append(grad_cos.copy())
        return grad_sin * np.cos(x) - grad_cos * np.sin(x)

    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    s, c = sincos(x)
    assert isinstance(s, torch.Tensor)
    assert isinstance(c, torch.Tensor)
    s.sum().backward()
    np.testing.assert_array_equal(seen[0], np.zeros(4))
    torch.testing.assert_close(x.grad, torch.cos(x.detach()))
    assert torch.autograd.gradcheck(sincos, (x,))


def test_user_exceptions_keep_their_type_and_gain_a_note(name: str) -> None:
    @npgrad.op(name)
    def picky(x):
        raise KeyError("no such key")

    @picky.backward
    def _(grad, x):
        raise ZeroDivisionError("backward broke")

    with pytest.raises(KeyError, match="no such key") as info:
        picky(torch.ones(1))
    (note,) = info.value.__notes__
    assert note.startswith(f'raised in the forward of npgrad op "{name}" defined at {__file__}:')


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


def test_bad_positional_input_is_an_error(name: str) -> None:
    mul = make_mul(name)
    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}": positional input "w" \(position 1\) is a str; expected a real '
        r"tensor, ndarray, number or None .*pass static config as a keyword argument",
    ):
        mul(torch.ones(2), "same")


def test_wrong_number_of_inputs_is_an_error(name: str) -> None:
    mul = make_mul(name)
    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}": called with 3 positional inputs, expected 2 \(x, w\)',
    ):
        mul(torch.ones(2), torch.ones(2), torch.ones(2))


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


def test_variadic_inputs(name: str) -> None:
    @npgrad.op(name)
    def total(*xs):
        return sum(xs)

    @total.backward
    def _(grad, *xs):
        return tuple(grad for _ in xs)

    xs = [torch.randn(3, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    assert torch.autograd.gradcheck(total, xs)


@pytest.mark.parametrize(
    "make",
    [
        lambda g: np.ascontiguousarray(g[::-1])[::-1],  # negative strides
        lambda g: np.asfortranarray(g),
        lambda g: g.astype(g.dtype.newbyteorder(">")),
        lambda g: g,  # the read-only gradient itself
    ],
    ids=["negative-strides", "fortran", "big-endian", "read-only"],
)
def test_awkward_gradients_are_taken(name: str, make) -> None:
    @npgrad.op(name)
    def ident(x):
        return x * 1

    @ident.backward
    def _(grad, x):
        return make(grad)

    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 4, dtype=torch.float64)
    ident(x).backward(g)
    torch.testing.assert_close(x.grad, g)


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


def test_tensor_backward_gradients_are_reduced_cast_and_checked(name: str) -> None:
    @npgrad.op(name)
    def add(x, b):
        return x + b

    @add.tensor_backward
    def _(grad, x, b, *, needs_input_grad):
        return grad.double(), grad  # b's is summed down, x's cast back to float32

    x = torch.randn(3, 2, requires_grad=True)
    b = torch.randn(1, 2, requires_grad=True)
    add(x, b).sum().backward()
    assert x.grad.dtype == torch.float32
    torch.testing.assert_close(b.grad, torch.full((1, 2), 3.0))

    @npgrad.op(name + "_bad")
    def bad(x):
        return x

    @bad.tensor_backward
    def _(grad, x):
        return grad[:1]

    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}_bad": tensor backward returned a gradient of shape \(1,\) for '
        r'input "x" \(position 0\) of shape \(3,\)',
    ):
        bad(torch.ones(3, requires_grad=True)).sum().backward()


def test_optional_inputs_default_to_none(name: str) -> None:
    @npgrad.op(name)
    def affine(x, b=None):
        return x if b is None else x + b

    torch.testing.assert_close(affine(torch.ones(2)), torch.ones(2))
    torch.testing.assert_close(affine(torch.ones(2), torch.ones(2)), torch.full((2,), 2.0))


def test_a_contiguous_looking_gradient_with_a_negative_stride(name: str) -> None:
    @npgrad.op(name)
    def ident(x):
        return x * 1

    @ident.backward
    def _(grad, x):
        return np.flip(grad.copy(), -1)  # shape (2, 1): flagged contiguous, stride negative

    x = torch.randn(2, 1, requires_grad=True)
    ident(x).backward(torch.ones(2, 1))
    torch.testing.assert_close(x.grad, torch.ones(2, 1))
