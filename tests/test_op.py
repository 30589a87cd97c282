"""The public Op: its decorators, metadata, repr and pickling."""

from __future__ import annotations

import inspect
import pickle

import pytest

import npgrad
from npgrad.errors import (
    DefinitionError,
)


def test_ops_keep_name_docstring_and_signature(name: str) -> None:
    @npgrad.op(name)
    def corr(x, w, *, mode="valid"):
        """Correlate things."""
        return x

    assert corr.__name__ == "corr"
    assert corr.__doc__ == "Correlate things."
    assert str(inspect.signature(corr)) == "(x, w, *, mode='valid')"
    assert repr(corr) == f"<npgrad op {name}(x, w, *, mode='valid'), no backward>"

    @corr.backward
    def _(grad, x, w, *, mode="valid"):
        return grad, None

    assert repr(corr) == f"<npgrad op {name}(x, w, *, mode='valid'), backward>"


def test_ops_pickle_by_name(name: str) -> None:
    @npgrad.op(name)
    def ident(x):
        return x

    assert pickle.loads(pickle.dumps(ident)) is ident


def test_backward_is_registered_once(name: str) -> None:
    @npgrad.op(name)
    def ident(x):
        return x

    @ident.backward
    def _(grad, x):
        return grad

    with pytest.raises(DefinitionError, match="a backward is already registered"):
        ident.backward(lambda grad, x: grad)
    with pytest.raises(DefinitionError, match='a gradient for input "x" is already registered'):
        ident.vjp("x")(lambda grad, x: grad)


def test_vjp_must_name_a_positional_input(name: str) -> None:
    @npgrad.op(name)
    def mul(x, w, *, scale=1):
        return x * w

    with pytest.raises(
        DefinitionError,
        match=rf"npgrad op \"{name}\": vjp for input 'scale', which is not one of its positional "
        r"inputs \('x', 'w'\)",
    ):
        mul.vjp("scale")
    with pytest.raises(DefinitionError, match="vjp for input 2"):
        mul.vjp(2)


def test_save_and_shape_take_functions(name: str) -> None:
    @npgrad.op(name)
    def ident(x):
        return x

    with pytest.raises(DefinitionError, match=r"@ident.save expects a function, got int"):
        ident.save(3)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match=r"@ident.shape expects a function, got str"):
        ident.shape("x")  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match=r"a jvp takes no needs_input_grad parameter"):

        @ident.jvp
        def _(t, x, *, needs_input_grad):
            return t
