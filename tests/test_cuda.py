"""CUDA tensors: NumPy runs on the CPU, results and gradients come back to the device.

Marked ``cuda``: they run where a CUDA device exists (``benchmarks/device_check.py`` runs them)
and are skipped elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import npgrad
from npgrad_scipy import Conv2d, conv2d

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_conv2d_on_cuda_matches_cpu_and_torch() -> None:
    x = torch.randn(2, 3, 16, 16, device="cuda", requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device="cuda", requires_grad=True)
    y = conv2d(x, w, mode="same")
    assert y.device == x.device
    expected = F.conv2d(x, w.flip((-2, -1)), padding=1)
    torch.testing.assert_close(y, expected, atol=1e-4, rtol=1e-4)
    y.sum().backward()
    assert x.grad.device == x.device
    assert w.grad.device == w.device
    gx, gw = torch.autograd.grad(expected.sum(), (x, w))
    torch.testing.assert_close(x.grad, gx, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(w.grad, gw, atol=1e-4, rtol=1e-4)


def test_cuda_and_cpu_scalar_mix_like_torch(name: str) -> None:
    @npgrad.op(name)
    def scale(x, s):
        return x * s

    y = scale(torch.ones(3, device="cuda"), torch.tensor(2.0))
    assert y.device.type == "cuda"


def test_vmap_and_compile_on_cuda(name: str) -> None:
    @npgrad.op(name, signature="(n),(n)->()")
    def dot(x, y):
        return np.dot(x, y)

    @dot.backward
    def _(g, x, y):
        return g * y, g * x

    x, y = torch.randn(5, 3, device="cuda"), torch.randn(3, device="cuda")
    torch.testing.assert_close(torch.func.vmap(dot, in_dims=(0, None))(x, y), x @ y)
    layer = Conv2d(2, 2, 3).cuda()
    data = torch.randn(1, 2, 8, 8, device="cuda")
    torch.testing.assert_close(torch.compile(layer)(data), layer(data), atol=1e-4, rtol=1e-4)
