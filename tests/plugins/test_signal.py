"""npgrad_scipy.signal.lfilter against SciPy's values and an independent torch recursion."""

from __future__ import annotations

import pytest
import scipy.signal
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import npgrad
from npgrad_scipy.signal import lfilter


def recursion(b: torch.Tensor, a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The filter as a plain torch loop over time (last axis): the independent oracle."""
    ys: list[torch.Tensor] = []
    for n in range(x.shape[-1]):
        acc = sum(b[k] * x[..., n - k] for k in range(len(b)) if n - k >= 0)
        acc = acc - sum(a[k] * ys[n - k] for k in range(1, len(a)) if n - k >= 0)
        ys.append(acc / a[0])
    return torch.stack(ys, dim=-1)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 20), st.integers(0, 2**16))
def test_values_and_gradients_match_a_torch_recursion(nb, na, n, seed) -> None:
    generator = torch.Generator().manual_seed(seed)
    b = torch.randn(nb, generator=generator, dtype=torch.float64, requires_grad=True)
    a = (torch.randn(na, generator=generator, dtype=torch.float64) * 0.3).requires_grad_()
    with torch.no_grad():
        a[0] = 1.0 + a[0].abs()  # a stable, non-zero leading coefficient
    x = torch.randn(2, n, generator=generator, dtype=torch.float64, requires_grad=True)
    ours = lfilter(b, a, x)
    expected = scipy.signal.lfilter(b.detach().numpy(), a.detach().numpy(), x.detach().numpy())
    torch.testing.assert_close(ours, torch.from_numpy(expected))
    theirs = recursion(b, a, x)
    weights = torch.randn(theirs.shape, generator=generator, dtype=torch.float64)
    got = torch.autograd.grad((ours * weights).sum(), (b, a, x))
    want = torch.autograd.grad((theirs * weights).sum(), (b, a, x))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_gradcheck_along_another_axis() -> None:
    b = torch.tensor([0.4, 0.2], dtype=torch.float64, requires_grad=True)
    a = torch.tensor([1.1, -0.3, 0.05], dtype=torch.float64, requires_grad=True)
    x = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: lfilter(*t, axis=0), (b, a, x))


def test_bad_coefficients_are_refused() -> None:
    with pytest.raises(npgrad.NpgradError, match=r"a\[0\] is 0; expected a non-zero leading"):
        lfilter(torch.ones(2), torch.tensor([0.0, 1.0]), torch.ones(5))
    with pytest.raises(npgrad.NpgradError, match=r"expected two non-empty 1-D coefficient vectors"):
        lfilter(torch.ones(2, 2), torch.ones(2), torch.ones(5))


def test_initial_conditions_are_refused_naming_the_keyword() -> None:
    with pytest.raises(
        npgrad.errors.InputError,
        match=r'"scipy::lfilter": got an unexpected keyword argument \'zi\'; expected the '
        r"positional inputs \(b, a, x\), in order or by name, and keyword config \(axis\)",
    ):
        lfilter(torch.ones(2), torch.ones(1), torch.ones(5), zi=torch.zeros(1))


def test_complex_coefficients_and_signals() -> None:
    b = torch.tensor([0.5 + 0.1j, 0.2], dtype=torch.complex128, requires_grad=True)
    a = torch.tensor([1.0, -0.3 + 0.2j], dtype=torch.complex128, requires_grad=True)
    x = torch.randn(2, 20, dtype=torch.complex128, requires_grad=True)
    expected = scipy.signal.lfilter(b.detach().numpy(), a.detach().numpy(), x.detach().numpy())
    torch.testing.assert_close(lfilter(b, a, x).detach(), torch.from_numpy(expected))
    assert torch.autograd.gradcheck(lfilter, (b, a, x))
    assert torch.autograd.gradgradcheck(lfilter, (b, a, x))
    real = torch.randn(2, 20, dtype=torch.float64, requires_grad=True)  # mixed real and complex
    assert torch.autograd.gradcheck(lfilter, (b, a, real))
