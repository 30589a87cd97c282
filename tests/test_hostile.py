"""Hostile inputs: every dtype, shape and layout (conj and neg views included), real, complex
and mixed, either works exactly like torch or raises an NpgradError; never a crash, never a
silently wrong dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import npgrad


@npgrad.op("hostile::fma")
def fma(x, w):
    return x * w + 1


@fma.backward
def _(g, x, w):
    # torch's convention: the gradient of z is dL/dz*, the output's gradient times conj(dy/dz).
    return g * np.conj(w), g * np.conj(x)


DTYPES = [
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.int32,
    torch.int64,
    torch.bool,
    torch.complex64,
    torch.complex128,
]
# "conj": a lazily conjugated complex view; "neg": a lazily negated real view (conj().imag).
LAYOUTS = ["contiguous", "transposed", "strided", "expanded", "conj", "neg"]


def make(shape: tuple[int, ...], dtype: torch.dtype, layout: str, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(*shape, 2, generator=generator, dtype=torch.float64)
    if dtype.is_complex:
        tensor = torch.complex(base[..., 0], base[..., 1]).to(dtype)
    elif dtype == torch.bool:
        tensor = base[..., 0] > 0
    elif not dtype.is_floating_point:
        tensor = (base[..., 0] * 5).to(dtype)
    else:
        tensor = base[..., 0].to(dtype)
    if layout == "conj" and dtype.is_complex:
        tensor = tensor.conj_physical().conj()  # the same values, behind a conj bit
        assert tensor.is_conj()
    elif layout == "neg" and dtype in (torch.float32, torch.float64):
        tensor = torch.complex(torch.zeros_like(tensor), -tensor).conj().imag
        assert tensor.is_neg()
    elif layout == "transposed" and tensor.dim() >= 2:
        tensor = tensor.transpose(0, 1).contiguous().transpose(0, 1)
    elif layout == "strided" and tensor.dim() >= 1:
        tensor = torch.cat([tensor, tensor], dim=-1)[..., ::2]
    elif layout == "expanded" and tensor.dim() >= 1 and tensor.shape[-1] > 0:
        tensor = tensor[..., :1].expand(tensor.shape)
    return tensor


shapes = st.sampled_from([(), (0,), (1,), (3,), (2, 3), (1, 4), (3, 1), (2, 0), (1, 1, 2)])


@settings(max_examples=200, deadline=None)
@given(
    shapes,
    st.sampled_from(DTYPES),
    st.sampled_from(DTYPES),
    st.sampled_from(LAYOUTS),
    st.sampled_from(LAYOUTS),
    st.booleans(),
    st.integers(0, 2**16),
)
def test_values_dtypes_and_gradients_match_torch(shape, dx, dw, lx, lw, grad, seed) -> None:
    x = make(shape, dx, lx, seed)
    w = make(shape, dw, lw, seed + 1)
    differentiable = [t for t in (x, w) if t.is_floating_point() or t.is_complex()]
    if grad:
        for t in differentiable:
            t.requires_grad_()
    with np.errstate(all="ignore"):
        ours = fma(x, w)
    theirs = x * w + 1
    assert ours.dtype == theirs.dtype
    assert ours.shape == theirs.shape
    loose = {"atol": 1e-2, "rtol": 1e-2} if theirs.dtype in (torch.float16, torch.bfloat16) else {}
    torch.testing.assert_close(ours, theirs, **loose)
    if grad and differentiable and ours.numel():
        # A real loss; of a complex output, one that depends on its real and imaginary parts
        # alike (for half floats a plain sum, which their rounding leaves comparable).
        def loss(values: torch.Tensor) -> torch.Tensor:
            return values.abs().pow(2).sum() if values.is_complex() else values.sum()

        expected = torch.autograd.grad(loss(theirs), differentiable)
        got = torch.autograd.grad(loss(ours), differentiable)
        for g, e in zip(got, expected, strict=True):
            assert g.dtype == e.dtype
            torch.testing.assert_close(g, e, **loose)


def test_user_function_returning_a_view_of_its_input_gives_a_copy(name: str) -> None:
    @npgrad.op(name)
    def same(x):
        return x

    x = torch.zeros(3)
    y = same(x)
    y.add_(1)
    assert torch.equal(x, torch.zeros(3))


def test_wrong_forward_shape_under_a_signature_is_an_error(name: str) -> None:
    @npgrad.op(name, signature="(n)->(n)")
    def shrink(x):
        return x[:-1]

    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}": forward returned shape \(3, 3\) at output 0, but the '
        r'signature "\(n\)->\(n\)" makes it \(3, 4\)',
    ):
        shrink(torch.ones(3, 4))


def test_batch_elements_of_differing_shapes_are_an_error(name: str) -> None:
    # No output dim is named by an input, so only the stacking can notice.
    @npgrad.op(name, signature="(n)->(m)")
    def positives(x):
        return x[x > 0]

    x = torch.tensor([[1.0, 2.0, -1.0], [1.0, 2.0, 3.0]])
    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}": result 0 for batch element 1 has shape \(3,\), but element 0 '
        r"gave shape \(2,\); expected the same shape for every batch element",
    ):
        positives(x)
    torch.testing.assert_close(positives(x.abs()), x.abs())
