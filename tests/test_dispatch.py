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
