"""Numerical gradients: finite differences and the complex step, from the forward alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import npgrad
from npgrad import _torch_internals as internals

# Smooth test functions and their torch twins (the analytic oracle).
FUNCTIONS = {
    "sin-exp": (lambda x, y: np.sin(x) * np.exp(y), lambda x, y: torch.sin(x) * torch.exp(y)),
    "rational": (lambda x, y: x / (1 + y**2), lambda x, y: x / (1 + y**2)),
    "log-cosh": (lambda x, y: np.log(np.cosh(x * y)), lambda x, y: torch.log(torch.cosh(x * y))),
}
TOLERANCE = {"central": 1e-6, "forward": 1e-4, "complex-step": 1e-12}


def make(name: str, forward, method: str, **options) -> npgrad.Op:
    op = npgrad.op(name, **options)(forward)
    op.numerical_gradient(method)
    return op


def assert_relatively_close(got: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    error = ((got - expected).abs().max() / expected.abs().max()).item()
    assert error <= rtol, error


@pytest.mark.parametrize("method", ["central", "forward", "complex-step"])
@pytest.mark.parametrize("function", list(FUNCTIONS))
def test_numerical_gradients_match_analytic_ones(name: str, method: str, function: str) -> None:
    forward, twin = FUNCTIONS[function]
    op = make(name, forward, method)
    x = torch.randn(5, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, dtype=torch.float64, requires_grad=True)
    got = torch.autograd.grad((op(x, y) ** 2).sum(), (x, y))
    expected = torch.autograd.grad((twin(x, y) ** 2).sum(), (x, y))
    for g, e in zip(got, expected, strict=True):
        assert_relatively_close(g, e, TOLERANCE[method])
    if internals.ENABLED:
        t = (torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64))
        _, ours = torch.func.jvp(op, (x.detach(), y.detach()), t)
        _, theirs = torch.func.jvp(twin, (x.detach(), y.detach()), t)
        assert_relatively_close(ours, theirs, TOLERANCE[method] * 10)


@pytest.mark.parametrize("vectorized", [False, True])
def test_a_signature_perturbs_core_elements_in_one_batched_call(
    name: str, vectorized: bool
) -> None:
    calls = []

    @npgrad.op(name, signature="(m,n),(n)->(m)", vectorized=vectorized)
    def layer(a, x):
        calls.append((np.shape(a), np.shape(x)))
        return np.tanh(np.einsum("...mn,...n->...m", a, x))

    layer.numerical_gradient("central")
    a = torch.randn(6, 3, 2, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, dtype=torch.float64, requires_grad=True)
    out = layer(a, x)
    calls.clear()
    got = torch.autograd.grad(out.sum(), (a, x))
    expected = torch.autograd.grad(torch.tanh(a @ x).sum(), (a, x))
    for g, e in zip(got, expected, strict=True):
        assert_relatively_close(g, e, 1e-6)
    if vectorized:
        # One call per input: the 2 * 6 perturbations of a's core, then the 2 * 2 of x's, as
        # one more batch dim in front.
        assert calls == [((12, 6, 3, 2), (2,)), ((6, 3, 2), (4, 1, 2))]


def test_only_inputs_that_need_a_gradient_are_perturbed(name: str) -> None:
    calls = []

    def forward(x, y):
        calls.append(1)
        return x * y

    op = make(name, forward, "forward")
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(4, dtype=torch.float64)
    out = op(x, y)
    calls.clear()
    (g,) = torch.autograd.grad(out.sum(), x)
    assert len(calls) == 4 + 1  # one per element of x, and the unperturbed point
    assert_relatively_close(g, y, 1e-6)


def test_low_precision_inputs_are_differentiated_in_float64(name: str) -> None:
    seen = []

    def forward(x):
        seen.append(x.dtype)
        return np.sin(x)

    op = make(name, forward, "central")
    x = torch.randn(3, dtype=torch.float32, requires_grad=True)
    out = op(x)
    seen.clear()
    (g,) = torch.autograd.grad(out.sum(), x)
    assert g.dtype == torch.float32
    assert set(seen) == {np.dtype(np.float64)}
    torch.testing.assert_close(g, torch.cos(x.detach()))


def test_complex_inputs_by_central_differences(name: str) -> None:
    op = make(name, lambda z: z * z, "central")
    z = torch.randn(4, dtype=torch.complex128, requires_grad=True)
    (got,) = torch.autograd.grad(op(z).abs().pow(2).sum(), z)
    (expected,) = torch.autograd.grad((z * z).abs().pow(2).sum(), z)
    assert_relatively_close(got, expected, 1e-6)
    step = make(name + "_step", lambda z: z * z, "complex-step")
    with pytest.raises(npgrad.errors.InputError, match=r"the complex-step gradient needs real"):
        torch.autograd.grad(step(z).abs().sum(), z)


def test_a_numerical_gradient_is_differentiable_once(name: str) -> None:
    op = make(name, np.sin, "central")
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(op(x).sum(), x, create_graph=True)
    with pytest.raises(npgrad.errors.NotTwiceDifferentiableError, match=rf'"{name}"'):
        torch.autograd.grad(g.sum(), x)


def test_check_and_repr_say_the_gradient_is_numerical(name: str) -> None:
    op = make(name, lambda x: np.exp(x), "complex-step")
    assert f"<npgrad op {name}(x), numerical gradient (complex-step, expected error ~2e-16)>" == (
        repr(op)
    )
    report = npgrad.check(op, torch.randn(4))
    assert report.verdicts["gradcheck"] == "passed"
    assert report.verdicts["numerical"].startswith(
        "complex-step differences, estimated relative error "
    )
    assert "measured error" in repr(op)


def test_wrong_choices_and_a_second_backward_are_refused(name: str) -> None:
    op = npgrad.op(name)(lambda x: x)
    with pytest.raises(
        npgrad.errors.DefinitionError,
        match=r"numerical_gradient\(method='backward'\); expected one",
    ):
        op.numerical_gradient("backward")
    with pytest.raises(
        npgrad.errors.DefinitionError,
        match=r"numerical_gradient\(step=2\); expected a relative step",
    ):
        op.numerical_gradient(step=2)
    op.numerical_gradient()
    with pytest.raises(npgrad.errors.DefinitionError, match="a backward is already registered"):
        op.numerical_gradient()
