"""torch.compile, torch.export and torch.library.opcheck.

Compiling costs seconds: the compiled functions are built once per module and shared.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import npgrad
from npgrad_scipy import Conv2d

pytestmark = pytest.mark.slow


@npgrad.op("lib::affine", signature="(n),(n)->(n)")
def affine(x, w, *, shift=0.5):
    return x * w + shift


@affine.backward
def _(g, x, w, *, shift=0.5):
    return g * w, g * x


@npgrad.op("lib::rows")
def rows(x, *, k=2):
    return np.repeat(x, k, axis=0)


@rows.shape
def _(x, *, k=2):
    return (x[0] * k, *x[1:])


@rows.backward
def _(g, x, *, k=2):
    return g.reshape(x.shape[0], k, *x.shape[1:]).sum(1)


SAVES: list[int] = []


@npgrad.op("lib::exp", signature="(n)->(n)", vectorized=True)
def exp(x):
    return np.exp(x)


@exp.save
def _(x):
    SAVES.append(1)
    e = np.exp(x)
    return e, {"e": e}


@exp.backward
def _(g, x, *, e):
    return g * e


@npgrad.op("lib::shift")
def shift(x, b=None):
    return x if b is None else x + b


@shift.shape
def _(x, b=None):
    return x


@shift.backward
def _(g, x, b=None, *, needs_input_grad):
    return g, (g if needs_input_grad[1] else None)


@npgrad.op("lib::opaque")
def opaque(x):
    return np.sort(x)


def model(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    # shift's optional input left out: the autograd formula sees the inputs as passed.
    return shift(rows(exp(affine(x, w, shift=1.0)), k=3)).tanh().sum()


compiled_model = torch.compile(model, fullgraph=True)


def test_compile_fullgraph_matches_eager_forward_and_backward() -> None:
    x = torch.randn(4, 5, requires_grad=True)
    w = torch.randn(5, requires_grad=True)
    expected = model(x, w)
    expected_grads = torch.autograd.grad(expected, (x, w))
    SAVES.clear()
    got = compiled_model(x, w)
    got_grads = torch.autograd.grad(got, (x, w))
    # A trace carries no residuals: the backward computed them again through @exp.save.
    assert SAVES
    torch.testing.assert_close(got, expected)
    for g, e in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e)


def test_exporting_an_op_that_cannot_be_traced_names_it() -> None:
    class Sorts(torch.nn.Module):
        def forward(self, v: torch.Tensor) -> torch.Tensor:
            return opaque(v)

    with pytest.raises(
        npgrad.errors.InputError,
        match=r'npgrad op "lib::opaque" met traced tensors .* its output shapes are unknown',
    ):
        torch.export.export(Sorts(), (torch.randn(3),))


def test_ops_are_reachable_as_torch_ops() -> None:
    x, w = torch.randn(3), torch.randn(3)
    (out,) = torch.ops.lib.affine(x, w, shift=1.0)
    torch.testing.assert_close(out, x * w + 1.0)


def test_an_op_without_shape_rule_is_a_graph_break_not_a_crash() -> None:
    def uses_opaque(x: torch.Tensor) -> torch.Tensor:
        return opaque(x * 2).sum()

    x = torch.randn(6)
    torch.testing.assert_close(torch.compile(uses_opaque)(x), uses_opaque(x))
    explanation = torch._dynamo.explain(uses_opaque)(x)
    assert explanation.graph_break_count >= 1
    # fullgraph=True makes the graph break an error, which names the op and the fix.
    with pytest.raises(
        Exception,
        match=r'npgrad op "lib::opaque" runs outside the graph: its output shapes are unknown; '
        r"give it a signature naming every output dim or an @opaque.shape rule",
    ):
        torch.compile(uses_opaque, fullgraph=True)(x)


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = Conv2d(2, 4, 3, mode="same")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).relu().mean((-2, -1))


def test_export_a_module_with_the_conv_layer() -> None:
    net = Net()
    x = torch.randn(3, 2, 10, 10)
    program = torch.export.export(net, (x,))
    assert "torch.ops.scipy.conv2d.default" in program.graph_module.code
    torch.testing.assert_close(program.module()(x), net(x))
    other = torch.randn(3, 2, 10, 10)
    torch.testing.assert_close(program.module()(other), net(other))


def test_compiled_conv_layer_trains_like_eager() -> None:
    torch.manual_seed(0)
    net = Net()
    compiled = torch.compile(net, fullgraph=True)
    x = torch.randn(2, 2, 8, 8)
    loss = compiled(x).sum()
    loss.backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net(x).sum().backward()
    for g, p in zip(grads, net.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, atol=1e-5, rtol=1e-5)
