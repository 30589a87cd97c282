"""One call: how inputs are sorted and which path a call takes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import npgrad

from shared_ops import make_mul, softplus


def test_bad_positional_input_is_an_error(name: str) -> None:
    mul = make_mul(name)
    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}": positional input "w" \(position 1\) is a str; expected a '
        r"tensor, ndarray, number, tuple of numbers or None; pass static config as a keyword "
        r"argument",
    ):
        mul(torch.ones(2), "same")


def test_wrong_number_of_inputs_is_an_error(name: str) -> None:
    mul = make_mul(name)
    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}": called with 3 positional inputs, expected 2 \(x, w\)',
    ):
        mul(torch.ones(2), torch.ones(2), torch.ones(2))


def test_variadic_inputs(name: str) -> None:
    @npgrad.op(name)
    def total(*xs):
        return sum(xs)

    @total.backward
    def _(grad, *xs):
        return tuple(grad for _ in xs)

    xs = [torch.randn(3, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    assert torch.autograd.gradcheck(total, xs)


def test_optional_inputs_default_to_none(name: str) -> None:
    @npgrad.op(name)
    def affine(x, b=None):
        return x if b is None else x + b

    torch.testing.assert_close(affine(torch.ones(2)), torch.ones(2))
    torch.testing.assert_close(affine(torch.ones(2), torch.ones(2)), torch.full((2,), 2.0))


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


def test_arrays_and_numbers_are_inputs_too(name: str) -> None:
    @npgrad.op(name)
    def affine(x, a, b):
        return a * x + b

    @affine.backward
    def _(grad, x, a, b):
        return grad * a, None, None

    x = torch.randn(3, requires_grad=True)
    y = affine(x, np.full(3, 2.0, dtype=np.float32), 1.5)
    torch.testing.assert_close(y, 2 * x.detach() + 1.5)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), 2.0))


def test_inputs_on_different_devices_are_refused(name: str) -> None:
    @npgrad.op(name)
    def add(x, y):
        return x + y

    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}": inputs are on different devices \(cpu, meta\); expected one '
        r"device .*move them with .to\(device\) first",
    ):
        add(torch.ones(2), torch.ones(2, device="meta"))


# --- calling conventions -----------------------------------------------------------------


def test_positional_inputs_may_be_given_by_name(name: str) -> None:
    @npgrad.op(name)
    def affine(x, w, b=None, *, power=1):
        return (x * w + (0 if b is None else b)) ** power

    @affine.backward
    def _(grad, x, w, b=None, *, power=1):
        assert power == 1
        return grad * w, grad * x, None if b is None else grad

    x = torch.tensor([1.0, 2.0], requires_grad=True)
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    expected = x * w
    for call in (
        lambda: affine(x=x, w=w),
        lambda: affine(x, w=w),
        lambda: affine(w=w, x=x, power=1),
        lambda: affine(x, w, b=None),
    ):
        torch.testing.assert_close(call(), expected)
    (gw,) = torch.autograd.grad(affine(w=w, x=x).sum(), w)
    torch.testing.assert_close(gw, x.detach())
    torch.testing.assert_close(affine(x, w, b=torch.ones(2)), expected + 1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda op: op(torch.ones(2), torch.ones(2), mode="same"), "got an unexpected keyword "
         r"argument 'mode'; expected the positional inputs \(x, w\), in order or by name, and "
         r"keyword config \(none\)"),
        (lambda op: op(x=torch.ones(2)), r"missing a required argument: 'w'"),
        (lambda op: op(torch.ones(2), x=torch.ones(2)), r"multiple values for argument 'x'"),
    ],
    ids=["unknown", "missing", "twice"],
)  # fmt: skip
def test_keywords_that_do_not_bind_are_errors_naming_them(name: str, call, message: str) -> None:
    mul = make_mul(name)
    with pytest.raises(npgrad.errors.InputError, match=rf'npgrad op "{name}": .*{message}'):
        call(mul)


def test_a_tensor_as_keyword_config_is_refused_naming_the_keyword(name: str) -> None:
    @npgrad.op(name)
    def scale(x, *, s=1.0):
        return x * s

    with pytest.raises(
        npgrad.errors.InputError,
        match=rf'npgrad op "{name}": keyword config "s" was given a tensor; config is static and '
        r"gets no gradient, .*make it a positional input of the forward",
    ):
        scale(torch.ones(2), s=torch.tensor(2.0))
    torch.testing.assert_close(scale(torch.ones(2), s=2.0), torch.full((2,), 2.0))


def test_tuples_of_numbers_are_positional_constants(name: str) -> None:
    @npgrad.op(name)
    def weigh(x, weights):
        assert isinstance(weights, (tuple, list))
        return x * np.asarray(weights, dtype=x.dtype)

    x = torch.ones(2, dtype=torch.float32)
    for weights in ((2.0, 3.0), [2, 3]):
        out = weigh(x, weights)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, torch.tensor([2.0, 3.0]))


# --- dtypes, devices and memory at the edges ------------------------------------------------


@pytest.mark.parametrize(
    ("make", "dtype", "fix"),
    [
        (lambda: torch.ones(3).to(torch.float8_e4m3fn), "torch.float8_e4m3fn", r"\.to\(torch"),
        (lambda: torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.qint8), "torch.qint8",
         r"\.dequantize\(\)"),
    ],
    ids=["float8", "quantized"],
)  # fmt: skip
# torch 2.13 deprecates its quantized dtypes; users still have such tensors.
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_float8_and_quantized_inputs_are_refused_naming_the_dtype(
    name: str, make, dtype: str, fix: str
) -> None:
    mul = make_mul(name)
    with pytest.raises(
        npgrad.errors.InputError,
        match=rf'npgrad op "{name}": positional input "x" \(position 0\) has dtype {dtype}, '
        rf"which NumPy has no type for; .*convert it with {fix}",
    ):
        mul(make(), 2.0)


def test_long_double_inputs_and_outputs_are_refused_naming_the_dtype(name: str) -> None:
    mul = make_mul(name)
    with pytest.raises(
        npgrad.errors.InputError,
        match=rf'"{name}": positional input "x" \(position 0\) is an array of dtype float128 '
        r"\(long double: torch has no such dtype\); .*cast it with \.astype\(np\.float64\)",
    ):
        mul(np.ones(3, dtype=np.longdouble), 2.0)

    @npgrad.op(name + "_out")
    def widen(x):
        return x.astype(np.longdouble)

    with pytest.raises(
        npgrad.errors.OutputError,
        match=rf'"{name}_out": forward returned an array of dtype float128 .* at output 0, '
        r"expected an ndarray of a numeric dtype; cast it with \.astype\(np\.float64\)",
    ):
        widen(torch.ones(3))


def test_meta_tensors_give_meta_results_from_the_shape_rule(name: str) -> None:
    calls = []

    @npgrad.op(name, signature="(m,n)->(n,m)")
    def transpose(x):
        calls.append(x.shape)
        return x.T.copy()

    out = transpose(torch.empty(4, 3, 2, device="meta", dtype=torch.float64))
    assert (out.device.type, out.shape, out.dtype) == ("meta", (4, 2, 3), torch.float64)
    assert calls == []  # NumPy never ran
    mul = make_mul(name + "_unshaped")
    with pytest.raises(
        npgrad.errors.InputError,
        match=rf'"{name}_unshaped": got meta tensors, which hold shapes but no values, and the '
        r"op cannot say its output shapes without running; give it a signature .* or an "
        r"@mul\.shape rule",
    ):
        mul(torch.empty(3, device="meta"), torch.empty(3, device="meta"))


def test_outputs_never_alias_each_other_or_an_input(name: str) -> None:
    @npgrad.op(name)
    def twice(x):
        y = x * 2
        return y, y, x

    x = torch.ones(3)
    first, second, third = twice(x)
    first += 1
    third += 1
    torch.testing.assert_close(second, torch.full((3,), 2.0))
    torch.testing.assert_close(x, torch.ones(3))


# --- torch.jit.trace ------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated")
def test_torch_jit_trace_records_the_op_not_a_constant(name: str) -> None:
    @npgrad.op(name, signature="(n),(n)->(n)")
    def mul(x, w):
        return x * w

    @mul.backward
    def _(grad, x, w):
        return grad * w, grad * x

    w = torch.tensor([1.0, 2.0, 3.0])
    for grad_mode in (False, True):
        with torch.set_grad_enabled(grad_mode):
            traced = torch.jit.trace(lambda x: mul(x, w), (torch.ones(3),))
        x = torch.full((3,), 5.0, requires_grad=True)
        torch.testing.assert_close(traced(x), x.detach() * w)
    traced(x).sum().backward()
    torch.testing.assert_close(x.grad, w)

    @npgrad.op(name + "_unshaped")
    def sine(x):
        return np.sin(x)

    with pytest.raises(
        npgrad.errors.InputError,
        match=rf'"{name}_unshaped" met traced tensors \(torch.compile, torch.export, '
        r"torch.jit.trace, fake tensors\) but cannot be traced: .*@sine\.shape rule",
    ):
        torch.jit.trace(lambda x: sine(x), (torch.ones(3),))
