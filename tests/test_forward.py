"""One run of a forward: what it may return, and errors raised in it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import npgrad


@pytest.mark.parametrize(
    ("result", "got", "fix"),
    [
        (None, "a NoneType", "return the result"),
        ([1.0, 2.0], "a list", "return a tuple of ndarrays"),
        (np.array([object()]), "an array of dtype object", "return bool, integer"),
        (np.array(["a"]), "an array of dtype <U1", "return bool, integer"),
    ],
    ids=["none", "list", "object", "string"],
)
def test_forward_results_that_are_not_arrays_are_errors(name: str, result, got, fix) -> None:
    @npgrad.op(name)
    def bad(x):
        return result

    with pytest.raises(
        npgrad.NpgradError,
        match=rf'npgrad op "{name}": forward returned {got} at output 0, expected an ndarray of '
        rf"a numeric dtype; {fix}",
    ):
        bad(torch.ones(2))


def test_numbers_and_numpy_scalars_are_zero_dim_results(name: str) -> None:
    @npgrad.op(name)
    def total(x):
        return float(x.sum()), np.float64(x.sum())

    a, b = total(torch.ones(3))
    assert a.shape == b.shape == ()
    assert a.dtype == b.dtype == torch.float32


def test_user_exceptions_keep_their_type_and_gain_a_note(name: str) -> None:
    @npgrad.op(name)
    def picky(x):
        raise KeyError("no such key")

    @picky.backward
    def _(grad, x):
        raise ZeroDivisionError("backward broke")

    with pytest.raises(KeyError, match="no such key") as info:
        picky(torch.ones(1))
    (note,) = info.value.__notes__
    assert note.startswith(f'raised in the forward of npgrad op "{name}" defined at {__file__}:')


@pytest.mark.parametrize(
    ("saved", "got"), [(np.ones(2), "a ndarray"), ((np.ones(2), [1]), "a tuple of 2")]
)
def test_save_must_return_outputs_and_residuals(name: str, saved, got: str) -> None:
    @npgrad.op(name)
    def ident(x):
        return x.copy()

    @ident.save
    def _(x):
        return saved

    @ident.backward
    def _(grad, x):
        return grad

    with pytest.raises(
        npgrad.errors.OutputError,
        match=rf'npgrad op "{name}": @ident.save returned {got}; expected \(outputs, residuals\) '
        r"with residuals a dict of names to values",
    ) as info:
        ident(torch.ones(2, requires_grad=True))
    assert "raised in the save of npgrad op" in info.value.__notes__[0]
