"""Layer: an nn.Module holding some of an op's inputs as Parameters."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d, correlate2d

import npgrad


@pytest.fixture
def corr2d(name: str) -> npgrad.Op:
    @npgrad.op(name)
    def corr2d(x, w, b, *, mode="valid"):
        return correlate2d(x, w, mode=mode) + b

    @corr2d.backward
    def _(grad, x, w, b, *, mode="valid"):
        assert mode == "valid"
        return convolve2d(grad, w, mode="full"), correlate2d(x, grad, mode="valid"), grad

    return corr2d


def test_keyword_tensors_become_named_parameters(corr2d: npgrad.Op) -> None:
    layer = npgrad.Layer(corr2d, w=torch.randn(3, 3), b=torch.zeros(1, 1))
    assert [n for n, _ in layer.named_parameters()] == ["w", "b"]
    assert isinstance(layer.w, torch.nn.Parameter)
    x = torch.randn(6, 6)
    torch.testing.assert_close(layer(x), corr2d(x, layer.w, layer.b))


def test_layer_trains_its_parameters(corr2d: npgrad.Op) -> None:
    layer = npgrad.Layer(corr2d, w=torch.randn(3, 3), b=torch.zeros(1, 1))
    layer(torch.randn(6, 6)).sum().backward()
    assert layer.w.grad is not None
    assert layer.w.grad.shape == (3, 3)
    assert layer.b.grad is not None
    assert layer.b.grad.shape == (1, 1)


def test_positional_arguments_fill_the_remaining_inputs_in_order(name: str) -> None:
    @npgrad.op(name)
    def lerp(a, w, b):
        return a + w * (b - a)

    layer = npgrad.Layer(lerp, w=torch.tensor(0.25))
    a, b = torch.zeros(3), torch.ones(3)
    torch.testing.assert_close(layer(a, b), torch.full((3,), 0.25))
    assert layer.free_inputs == ("a", "b")


def test_config_passes_through(corr2d: npgrad.Op) -> None:
    layer = npgrad.Layer(corr2d, w=torch.randn(3, 3), b=torch.zeros(1, 1), mode="same")
    x = torch.randn(6, 6)
    assert layer(x).shape == (6, 6)
    assert layer(x, mode="full").shape == (8, 8)


def test_repr_shows_op_and_parameter_shapes(corr2d: npgrad.Op) -> None:
    layer = npgrad.Layer(corr2d, w=torch.randn(3, 3), b=torch.zeros(1, 1), mode="same")
    assert repr(layer) == f"Layer({corr2d.name}, w=(3, 3), b=(1, 1), mode='same')"


def test_state_dict_round_trips_with_weights_only(corr2d: npgrad.Op) -> None:
    layer = npgrad.Layer(corr2d, w=torch.randn(3, 3), b=torch.randn(1, 1))
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    other = npgrad.Layer(corr2d, w=torch.zeros(3, 3), b=torch.zeros(1, 1))
    other.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(other.w, layer.w)
    torch.testing.assert_close(other.b, layer.b)


def test_double_and_to_move_parameters(corr2d: npgrad.Op) -> None:
    layer = npgrad.Layer(corr2d, w=torch.randn(3, 3), b=torch.zeros(1, 1)).double()
    assert layer.w.dtype == torch.float64
    y = layer(torch.randn(6, 6, dtype=torch.float64))
    assert y.dtype == torch.float64
    layer.to(torch.float32)
    assert layer.b.dtype == torch.float32
    x = torch.randn(8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer.double(), (x,))


def test_integer_tensors_become_buffers(name: str) -> None:
    @npgrad.op(name)
    def take(x, index):
        return x[index]

    layer = npgrad.Layer(take, index=np.array([2, 0]))
    assert "index" in dict(layer.named_buffers())
    torch.testing.assert_close(layer(torch.arange(3.0)), torch.tensor([2.0, 0.0]))


def test_unknown_keywords_and_wrong_calls_are_errors(corr2d: npgrad.Op) -> None:
    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad.Layer of op "{corr2d.name}": keyword "bias" is neither a positional input '
        r"\(x, w, b\) nor config \(mode\)",
    ):
        npgrad.Layer(corr2d, bias=torch.zeros(1))
    with pytest.raises(
        npgrad.NpgradError,
        match=r'input "w" was given a str; expected a tensor or ndarray \(held as a Parameter or '
        r"buffer\), or a number or tuple of numbers \(held as a constant\)",
    ):
        npgrad.Layer(corr2d, w="ones")
    with pytest.raises(npgrad.NpgradError, match=r"expected an npgrad op .* got function"):
        npgrad.Layer(lambda x: x)
    layer = npgrad.Layer(corr2d, w=torch.randn(3, 3), b=torch.zeros(1, 1))
    with pytest.raises(
        npgrad.NpgradError,
        match=r"called with 2 inputs by position and 0 by name, expected 1 \(x\)",
    ):
        layer(torch.ones(4, 4), torch.ones(4, 4))


def test_nondifferentiable_inputs_become_buffers_and_numbers_constants() -> None:
    from npgrad_scipy.ndimage import gaussian_filter
    from npgrad_scipy.special import kv

    bessel = npgrad.Layer(kv, v=torch.tensor(1.5, dtype=torch.float64))
    assert list(dict(bessel.named_buffers())) == ["v"]
    assert list(bessel.parameters()) == []
    x = torch.tensor([0.5, 2.0], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(bessel(x).sum(), x)
    torch.testing.assert_close(g, -(kv(0.5, x) + kv(2.5, x)).detach() / 2)

    blur = npgrad.Layer(gaussian_filter, sigma=(1.0, 2.0), mode="nearest")
    assert blur.constants == {"sigma": (1.0, 2.0)}
    image = torch.randn(6, 7, requires_grad=True)
    blur(image).sum().backward()
    assert image.grad is not None
    assert "sigma=(1.0, 2.0)" in repr(blur)


def test_free_inputs_may_be_given_by_name(corr2d: npgrad.Op) -> None:
    layer = npgrad.Layer(corr2d, w=torch.randn(3, 3), b=torch.zeros(1, 1))
    x = torch.randn(6, 6)
    torch.testing.assert_close(layer(x=x), layer(x))
    with pytest.raises(npgrad.NpgradError, match=r'input "x" was given both by position and by'):
        layer(x, x=x)
