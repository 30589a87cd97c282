"""Complex numbers through every door, with torch's convention (the gradient of z is dL/dz*)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import jacfwd, jacrev, vmap

import npgrad
from npgrad import _torch_internals as internals


@npgrad.op("complex::fft", signature="(n)->(n)", vectorized=True)
def fft(x):
    return np.fft.fft(x)


@fft.backward
def _(g, x):
    # The DFT's adjoint: the gradient of a linear map z -> F z is F^H g = n ifft(g).
    return np.fft.ifft(g) * g.shape[-1]


@npgrad.op("complex::square")
def square(z):
    return z * z


@square.tensor_backward
def _(g, z):
    # Holomorphic: the gradient is g times the conjugate derivative, conj(2 z).
    return g * (2 * z).conj()


def twin_loss(values: torch.Tensor) -> torch.Tensor:
    return (values.abs() ** 2).sum() + values.real.sum()


def test_a_user_fft_equals_torch_fft_in_values_and_gradients() -> None:
    z = torch.randn(3, 8, dtype=torch.complex128, requires_grad=True)
    torch.testing.assert_close(fft(z), torch.fft.fft(z))
    assert torch.autograd.gradcheck(fft, (z,))
    (ours,) = torch.autograd.grad(twin_loss(fft(z)), z)
    (theirs,) = torch.autograd.grad(twin_loss(torch.fft.fft(z)), z)
    torch.testing.assert_close(ours, theirs)
    # A real signal: a complex output, a real gradient, as torch gives it.
    x = torch.randn(8, dtype=torch.float64, requires_grad=True)
    (ours,) = torch.autograd.grad(twin_loss(fft(x)), x)
    (theirs,) = torch.autograd.grad(twin_loss(torch.fft.fft(x)), x)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, theirs)


def test_a_user_fft_under_vmap_and_jacrev() -> None:
    z = torch.randn(4, 6, dtype=torch.complex128)
    torch.testing.assert_close(vmap(fft)(z), torch.fft.fft(z))
    # jacrev takes real inputs: differentiate through the real and imaginary parts.
    re, im = z[0].real.clone(), z[0].imag.clone()

    def through(f):
        return jacrev(lambda a, b: torch.view_as_real(f(torch.complex(a, b))), (0, 1))(re, im)

    for ours, theirs in zip(through(fft), through(torch.fft.fft), strict=True):
        torch.testing.assert_close(ours, theirs)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Torchinductor does not support code generation for complex")
def test_a_user_fft_under_compile() -> None:
    z = torch.randn(3, 8, dtype=torch.complex128, requires_grad=True)
    compiled = torch.compile(lambda v: fft(v) * 2, fullgraph=True)
    torch.testing.assert_close(compiled(z), 2 * torch.fft.fft(z))
    (ours,) = torch.autograd.grad(twin_loss(compiled(z)), z)
    (theirs,) = torch.autograd.grad(twin_loss(2 * torch.fft.fft(z)), z)
    torch.testing.assert_close(ours, theirs)


def test_the_worked_example_z_squared_and_its_modulus() -> None:
    # torch's gradient of a real L is dL/dRe(z) + i dL/dIm(z) = 2 dL/dz*: for L = |z^2|^2 =
    # |z|^4 it is 4 |z|^2 z, as docs/complex.md derives.
    z = torch.tensor([1.0 + 2.0j, -0.5 + 0.25j], dtype=torch.complex128, requires_grad=True)
    (ours,) = torch.autograd.grad(square(z).abs().pow(2).sum(), z)
    (theirs,) = torch.autograd.grad((z * z).abs().pow(2).sum(), z)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours, 4 * z.detach().abs() ** 2 * z.detach())
    assert torch.autograd.gradcheck(square, (z,))
    assert torch.autograd.gradgradcheck(square, (z,))


@pytest.mark.skipif(not internals.ENABLED, reason="forward mode under torch.func")
def test_complex_forward_mode_from_a_tensor_backward() -> None:
    z = torch.randn(3, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(square, (z,), check_forward_ad=True, check_backward_ad=False)
    t = torch.randn(3, dtype=torch.complex128)
    _, tangent = torch.func.jvp(square, (z.detach(),), (t,))
    torch.testing.assert_close(tangent, 2 * z.detach() * t)
    re = z.detach().real.clone()
    second = jacfwd(jacfwd(lambda a: square(a + 0j).real.sum()))(re)
    torch.testing.assert_close(second, torch.diag(torch.full((3,), 2.0, dtype=torch.float64)))


def test_check_runs_on_complex_ops() -> None:
    report = npgrad.check(square, torch.randn(4, dtype=torch.complex64))
    assert report.verdicts["gradcheck"] == "passed"
    assert report.verdicts["gradgradcheck"] == "passed"
    assert report.verdicts["dtype"] == "passed"
    assert npgrad.check(fft, torch.randn(2, 5, dtype=torch.complex64)).verdicts["gradcheck"] == (
        "passed"
    )


def test_a_wrong_complex_gradient_fails_the_check(name: str) -> None:
    @npgrad.op(name)
    def cube(z):
        return z**3

    @cube.backward
    def _(g, z):
        return g * 3 * z**2  # the derivative, not its conjugate: wrong for complex z

    with pytest.raises(npgrad.errors.CheckError, match=rf'"{name}": gradcheck failed'):
        npgrad.check(cube, torch.randn(3, dtype=torch.complex64))


@npgrad.op("complex::modulus_squared")
def modulus_squared(z):
    return (z * np.conj(z)).real


@modulus_squared.backward
def _(g, z):
    # Not holomorphic, a real output: the gradient is g (dy/dRe z + i dy/dIm z) = g 2 z.
    return g * 2 * z


def test_a_real_output_of_a_complex_input() -> None:
    z = torch.randn(4, dtype=torch.complex128, requires_grad=True)
    out = modulus_squared(z)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, z.detach().abs() ** 2)
    assert torch.autograd.gradcheck(modulus_squared, (z,))
    (ours,) = torch.autograd.grad(out.sin().sum(), z)
    (theirs,) = torch.autograd.grad((z.abs() ** 2).sin().sum(), z)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.slow
# torch 2.14's fake tensors read .grad of the non-leaf tensors they make from a complex leaf,
# inside opcheck, and its own filter for that warning misses under pytest's "error" filter.
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
def test_a_complex_op_exports_and_passes_opcheck() -> None:
    class Spectrum(torch.nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return fft(z) * 2

    z = torch.randn(3, 8, dtype=torch.complex128)
    exported = torch.export.export(Spectrum(), (z,))
    torch.testing.assert_close(exported.module()(z), 2 * torch.fft.fft(z))
    torch.library.opcheck(torch.ops.complex.fft.default, (z.requires_grad_(),))


def test_a_real_output_of_complex_inputs_is_refused_as_a_custom_op() -> None:
    # A trace only knows the promoted dtype; called eagerly, the same op is fine (above).
    z = torch.randn(4, dtype=torch.complex128)
    with pytest.raises(
        npgrad.errors.OutputError,
        match=r'"complex::modulus_squared": as a custom op \(torch.compile, torch.export, '
        r"torch.ops\) its outputs take the promoted dtype of its inputs, torch.complex128, but "
        r"output 0 is torch.float64",
    ):
        torch.ops.complex.modulus_squared(z)
