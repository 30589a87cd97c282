"""npgrad_scipy.conv: the tutorial's op and layer, against the tutorial's hand-written Function."""

from __future__ import annotations

from importlib.metadata import entry_points

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d, correlate2d
from torch.autograd import Function
from torch.autograd.gradcheck import gradcheck

import npgrad
from npgrad_scipy import ScipyConv2d, scipy_conv2d


class ScipyConv2dFunction(Function):
    """The oracle: the tutorial's hand-written Function, verbatim."""

    @staticmethod
    def forward(ctx, input, filter, bias):
        input, filter, bias = input.detach(), filter.detach(), bias.detach()
        result = correlate2d(input.numpy(), filter.numpy(), mode="valid")
        result += bias.numpy()
        ctx.save_for_backward(input, filter, bias)
        return torch.as_tensor(result, dtype=input.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        grad_output = grad_output.detach()
        input, filter, _bias = ctx.saved_tensors
        grad_output = grad_output.numpy()
        grad_bias = np.sum(grad_output, keepdims=True)
        grad_input = convolve2d(grad_output, filter.numpy(), mode="full")
        grad_filter = correlate2d(input.numpy(), grad_output, mode="valid")
        return (
            torch.from_numpy(grad_input),
            torch.from_numpy(grad_filter).to(torch.float),
            torch.from_numpy(grad_bias).to(torch.float),
        )


@pytest.mark.parametrize(
    ("size", "filter_size"), [((5, 5), (2, 2)), ((20, 20), (3, 3)), ((9, 7), (4, 2))]
)
def test_matches_the_hand_written_function(size, filter_size) -> None:
    module = ScipyConv2d(*filter_size)
    input = torch.randn(*size, requires_grad=True)
    leaves = [
        input.detach().clone().requires_grad_(),
        module.filter.detach().clone().requires_grad_(),
        module.bias.detach().clone().requires_grad_(),
    ]
    ours = module(input)
    theirs = ScipyConv2dFunction.apply(*leaves)
    torch.testing.assert_close(ours, theirs)
    grad = torch.randn(ours.shape)
    ours.backward(grad)
    theirs.backward(grad)
    for got, expected in zip([input, module.filter, module.bias], leaves, strict=True):
        assert got.grad.dtype == expected.grad.dtype
        torch.testing.assert_close(got.grad, expected.grad)


def test_the_tutorials_gradcheck_passes() -> None:
    module_conv = ScipyConv2d(3, 3)
    input = [torch.randn(20, 20, dtype=torch.double, requires_grad=True)]
    assert gradcheck(module_conv, input, eps=1e-6, atol=1e-4)


def test_all_three_gradients_check_in_float64() -> None:
    args = [torch.randn(10, 10), torch.randn(3, 3), torch.randn(1, 1)]
    report = npgrad.check(scipy_conv2d, *args)
    assert report.verdicts["gradcheck"] == "passed"


def test_layer_has_the_tutorials_parameters() -> None:
    module = ScipyConv2d(2, 3)
    assert [(n, tuple(p.shape)) for n, p in module.named_parameters()] == [
        ("filter", (2, 3)),
        ("bias", (1, 1)),
    ]
    assert module(torch.randn(5, 5)).grad_fn.name() == "scipy_scipy_conv2dBackward"


def test_the_op_is_registered_and_the_plugin_is_an_entry_point() -> None:
    assert npgrad.get("scipy::scipy_conv2d") is scipy_conv2d
    plugins = {ep.name: ep.value for ep in entry_points(group="npgrad.plugins")}
    assert plugins.get("scipy") == "npgrad_scipy"
