"""npgrad_scipy.ndimage.gaussian_filter against SciPy's values; its gradient, the exact adjoint."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import npgrad
from npgrad_scipy.ndimage import gaussian_filter

MODES = ["reflect", "mirror", "nearest", "wrap", "constant"]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(1, 9), min_size=1, max_size=3),
    st.floats(0.0, 3.0),
    st.sampled_from(MODES),
    st.floats(1.0, 4.0),
    st.integers(0, 2**16),
)
def test_values_equal_scipy_and_the_gradient_is_the_adjoint(shape, sigma, mode, truncate, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    ours = gaussian_filter(torch.from_numpy(x), sigma, mode=mode, truncate=truncate)
    expected = scipy.ndimage.gaussian_filter(x, sigma, mode=mode, truncate=truncate)
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-12)
    # The adjoint test: <A x, y> == <x, A^T y> for a random y, with A^T from autograd.
    y = torch.from_numpy(np.random.default_rng(seed + 1).standard_normal(ours.shape))
    t = torch.from_numpy(x).requires_grad_()
    (adjoint,) = torch.autograd.grad(gaussian_filter(t, sigma, mode=mode, truncate=truncate), t, y)
    torch.testing.assert_close((ours * y).sum(), (t.detach() * adjoint).sum())


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_with_a_kernel_wider_than_the_input(mode: str) -> None:
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: gaussian_filter(a, 2.5, mode=mode), (x,))


def test_per_axis_sigma_and_low_precision() -> None:
    x = torch.randn(6, 7)
    sigma = np.array([0.5, 2.0], dtype=np.float32)  # a float64 sigma would promote the output
    expected = scipy.ndimage.gaussian_filter(x.double().numpy(), sigma)
    torch.testing.assert_close(gaussian_filter(x, sigma), torch.from_numpy(expected).float())
    assert gaussian_filter(x.half(), 1.0).dtype == torch.float16


def test_other_modes_and_negative_sigma_are_refused() -> None:
    with pytest.raises(npgrad.NpgradError, match=r"mode='grid-wrap'; expected one of reflect"):
        gaussian_filter(torch.ones(4), 1.0, mode="grid-wrap")
    with pytest.raises(npgrad.NpgradError, match=r"has negative values; expected sigma >= 0"):
        gaussian_filter(torch.ones(4), -1.0)


@pytest.mark.parametrize(
    ("shape", "sigma", "order", "config"),
    [
        ((9, 8), (1.3, 0.7), (1, 2), {"mode": "constant", "cval": 0.7}),
        ((9, 8, 5), [1.0, 2.0], (0, 1), {"mode": ("wrap", "nearest"), "radius": (2, 4),
                                          "axes": (0, 2)}),
        ((7,), 2.0, 3, {"mode": "mirror", "radius": 5}),
        ((6, 6), [0.0, 1.0], 1, {"mode": "constant", "cval": -1.0}),
        ((6, 6), 1.0, 0, {"mode": "constant", "cval": 2.0, "axes": (-1,)}),
    ],
    ids=["orders-cval", "per-axis-radius-axes", "third-derivative", "zero-sigma", "one-axis"],
)  # fmt: skip
def test_scipys_other_arguments_equal_scipy_to_second_order(shape, sigma, order, config) -> None:
    x = np.random.default_rng(0).standard_normal(shape)
    expected = scipy.ndimage.gaussian_filter(x, sigma, order, **config)
    got = gaussian_filter(torch.from_numpy(x), sigma, order, **config)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)
    t = torch.from_numpy(x).requires_grad_()
    assert torch.autograd.gradcheck(lambda a: gaussian_filter(a, sigma, order, **config), (t,))
    assert torch.autograd.gradgradcheck(lambda a: gaussian_filter(a, sigma, order, **config), (t,))


def test_sigma_by_keyword_as_scipy_spells_it_and_an_empty_batch() -> None:
    x = torch.randn(8, 8, dtype=torch.float64)
    expected = scipy.ndimage.gaussian_filter(x.numpy(), sigma=2.0)
    np.testing.assert_allclose(gaussian_filter(x, sigma=2.0).numpy(), expected, atol=1e-12)
    empty = torch.zeros(0, 8, 8, requires_grad=True)
    out = gaussian_filter(empty, 1.0)
    assert out.shape == (0, 8, 8)
    (g,) = torch.autograd.grad(out.sum(), empty)
    assert g.shape == (0, 8, 8)


def test_a_keyword_scipy_has_and_npgrad_lacks_is_named() -> None:
    with pytest.raises(
        npgrad.errors.InputError,
        match=r'"scipy::gaussian_filter": got an unexpected keyword argument \'output\'; expected '
        r"the positional inputs \(x, sigma, order\), in order or by name, and keyword config "
        r"\(axes, cval, mode, radius, truncate\)",
    ):
        gaussian_filter(torch.ones(4), 1.0, output=np.float32)
