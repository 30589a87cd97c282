"""npgrad.check: passes good ops, and names the op and input of bad ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import npgrad
from npgrad import _torch_internals as internals


def test_check_passes_a_correct_op(name: str) -> None:
    @npgrad.op(name)
    def mul(x, w):
        return x * w

    @mul.backward
    def _(grad, x, w):
        return grad * w, grad * x

    report = npgrad.check(mul, torch.randn(3), torch.randn(3))
    assert report.op == name
    assert report.verdicts == {
        "finite": "passed",
        "gradcheck": "passed",
        "gradgradcheck": "skipped: NumPy backward is differentiable once",
        "forward": "skipped: no jvp",
        "forward-over-forward": "skipped: needs torch's internals"
        if not internals.ENABLED
        else "skipped: no jvp",
        "dtype": "passed",
    }
    assert name in str(report)


def test_check_runs_every_order_and_forward_mode_of_a_tensor_backward(name: str) -> None:
    @npgrad.op(name)
    def mul(x, w):
        return x * w

    @mul.tensor_backward
    def _(grad, x, w):
        return grad * w, grad * x

    report = npgrad.check(mul, torch.randn(3), torch.randn(3))
    forward = "passed" if internals.ENABLED else "skipped: forward mode from a tensor backward"
    assert report.verdicts["gradgradcheck"] == "passed"
    assert report.verdicts["forward"].startswith(forward)
    twice = "passed" if internals.ENABLED else "skipped: needs torch's internals"
    assert report.verdicts["forward-over-forward"] == twice


@pytest.mark.skipif(not internals.ENABLED, reason="forward over forward needs torch's internals")
def test_check_finds_a_tensor_jvp_right_once_and_wrong_twice(name: str) -> None:
    @npgrad.op(name)
    def sinh(x):
        return np.sinh(x)

    @sinh.tensor_backward
    def _(g, x):
        return g * torch.cosh(x)

    @sinh.tensor_jvp
    def _(t, x):
        return t * torch.cosh(x.detach())  # right tangents, but a constant to outer levels

    with pytest.raises(
        npgrad.errors.CheckError,
        match=rf'npgrad.check of op "{name}": forward-over-forward failed: output 0: the '
        r"second directional derivative differs from central differences by up to .*; fix the "
        r"op's jvp \(or tensor backward\)",
    ):
        npgrad.check(sinh, torch.randn(3))


def test_check_names_the_input_with_a_wrong_gradient(name: str) -> None:
    @npgrad.op(name)
    def mul(x, w):
        return x * w

    @mul.backward
    def _(grad, x, w):
        return grad * w, grad * x * 1.5  # wrong for w

    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad.check of op "{name}": gradcheck failed for input "w" \(position 1\): '
        r"Jacobian mismatch",
    ):
        npgrad.check(mul, torch.randn(3), torch.randn(3))


def test_check_only_counts_differentiable_inputs(name: str) -> None:
    @npgrad.op(name)
    def scaled(index, w):
        return w[index] * 2

    @scaled.backward
    def _(grad, index, w):
        out = np.zeros_like(w)
        np.add.at(out, index, grad)
        return None, out  # missing the factor 2

    with pytest.raises(npgrad.NpgradError, match=r'failed for input "w" \(position 1\)'):
        npgrad.check(scaled, torch.tensor([0, 2]), torch.randn(3))


def test_check_refuses_non_finite_outputs(name: str) -> None:
    @npgrad.op(name)
    def log(x):
        return np.log(x)

    with (
        np.errstate(divide="ignore", invalid="ignore"),
        pytest.raises(
            npgrad.NpgradError,
            match=rf'npgrad.check of op "{name}": output 0 has NaN or Inf values on the example '
            r"inputs",
        ),
    ):
        npgrad.check(log, torch.tensor([-1.0, 0.0]))


def test_check_reports_errors_of_the_op_itself(name: str) -> None:
    @npgrad.op(name)
    def broken(x):
        raise RuntimeError("kaput")

    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad.check of op "{name}": finite failed: RuntimeError: kaput',
    ):
        npgrad.check(broken, torch.ones(2))


def test_check_without_backward_skips_gradients(name: str) -> None:
    @npgrad.op(name)
    def floor(x):
        return np.floor(x)

    report = npgrad.check(floor, torch.randn(3))
    assert report.verdicts["gradcheck"] == "skipped: no backward"


def test_check_takes_config_and_tolerances(name: str) -> None:
    @npgrad.op(name)
    def power(x, *, p=2):
        return x**p

    @power.backward
    def _(grad, x, *, p=2):
        return grad * p * x ** (p - 1) * (1 + 1e-2)  # slightly off

    x = torch.rand(3) + 0.5
    npgrad.check(power, x, p=3, atol=1e-1, rtol=5e-2)
    with pytest.raises(npgrad.NpgradError, match="gradcheck failed"):
        npgrad.check(power, x, p=3)


def test_check_leaves_the_callers_inputs_alone(name: str) -> None:
    @npgrad.op(name)
    def double(x):
        return 2 * x

    @double.backward
    def _(grad, x):
        return 2 * grad

    x = torch.randn(3)
    npgrad.check(double, x)
    assert x.dtype == torch.float32
    assert not x.requires_grad
    assert x.grad is None
