"""Core-dim signatures and the loop over batch dims."""

from __future__ import annotations

import pytest
import torch

import npgrad

from shared_ops import dot, f64, matvec


def test_signature_broadcasts_batch_dims() -> None:
    a, x = f64(4, 1, 3, 5), f64(2, 5)
    torch.testing.assert_close(matvec(a, x), torch.einsum("...mn,...n->...m", a, x))


def test_bad_signatures_are_refused(name: str) -> None:
    with pytest.raises(npgrad.NpgradError, match=r"signature '\(n\)->' is not of the form"):
        npgrad.op(name, signature="(n)->")(lambda x: x)
    with pytest.raises(
        npgrad.NpgradError, match=r'signature "\(n\)->\(n\)" has 1 inputs, the function 2'
    ):
        npgrad.op(name + "_2", signature="(n)->(n)")(lambda x, y: x)
    with pytest.raises(npgrad.NpgradError, match=r'core dim "n" of input 1 has size 4'):
        dot(f64(3), f64(4))
