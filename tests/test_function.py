"""The generated autograd.Functions: what a call saves, the node it records, its outputs."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch

import npgrad

from shared_ops import make_mul


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


def test_an_op_runs_under_torch_no_grad_and_inference_mode(name: str) -> None:
    @npgrad.op(name)
    def double(x):
        return 2 * x

    with torch.inference_mode():
        y = double(torch.ones(2))
    assert torch.equal(y, torch.full((2,), 2.0))
    assert double(np.ones(2)).dtype == torch.float64
