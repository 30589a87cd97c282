"""Defining ops: names, the registry, metadata, definition errors."""

from __future__ import annotations

import inspect
import pickle
import threading

import numpy as np
import pytest
import torch

import npgrad
from npgrad.errors import (
    CheckError,
    DefinitionError,
    GradientError,
    InputError,
    MissingBackwardError,
    NotTwiceDifferentiableError,
    OutputError,
    UnknownOpError,
)


def test_ops_are_registered_by_name(name: str) -> None:
    @npgrad.op(name)
    def ident(x):
        return x

    assert npgrad.get(name) is ident
    assert name in npgrad.ops()
    assert npgrad.ops() == sorted(npgrad.ops())


def test_a_taken_name_is_refused_saying_where_the_first_was(name: str) -> None:
    @npgrad.op(name)
    def first(x):
        return x

    with pytest.raises(
        DefinitionError,
        match=rf'npgrad op "{name}": the name is already registered by .*first defined at '
        rf".*test_op.py:\d+; the new definition at .*test_op.py:\d+ was refused",
    ):

        @npgrad.op(name)
        def second(x):
            return x

    assert npgrad.get(name) is first


def test_unknown_names_suggest_close_ones(name: str) -> None:
    @npgrad.op(name)
    def ident(x):
        return x

    with pytest.raises(UnknownOpError, match=rf"no op is registered under .*did you mean '{name}'"):
        npgrad.get(name + "x")
    with pytest.raises(LookupError, match="import the module or plugin that defines it"):
        npgrad.get("nowhere::zzz_qqq")


@pytest.mark.parametrize("bad", ["plain", "a::b::c", "a::", "1a::b", "a b::c"])
def test_names_must_be_namespace_and_name(bad: str) -> None:
    with pytest.raises(DefinitionError, match=r'is not of the form "namespace::name"'):
        npgrad.op(bad)(lambda x: x)


def test_registering_from_many_threads_loses_none(name: str) -> None:
    names = [f"{name}_{i}" for i in range(64)]
    barrier = threading.Barrier(8)

    def register(chunk: list[str]) -> None:
        barrier.wait()
        for n in chunk:
            npgrad.op(n)(lambda x: x)

    threads = [threading.Thread(target=register, args=(names[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(names) <= set(npgrad.ops())


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


def test_config_may_not_shadow_backward_extras(name: str) -> None:
    with pytest.raises(DefinitionError, match=r"keyword config \['outputs'\] uses a name npgrad"):

        @npgrad.op(name)
        def bad(x, *, outputs=1):
            return x


def test_errors_are_npgrad_errors_and_builtin_ones() -> None:
    pairs = [
        (DefinitionError, ValueError),
        (UnknownOpError, LookupError),
        (InputError, TypeError),
        (OutputError, TypeError),
        (GradientError, ValueError),
        (MissingBackwardError, RuntimeError),
        (NotTwiceDifferentiableError, RuntimeError),
        (CheckError, AssertionError),
    ]
    for cls, builtin in pairs:
        assert issubclass(cls, npgrad.NpgradError)
        assert issubclass(cls, builtin)
        assert cls.__doc__


def test_an_op_runs_under_torch_no_grad_and_inference_mode(name: str) -> None:
    @npgrad.op(name)
    def double(x):
        return 2 * x

    with torch.inference_mode():
        y = double(torch.ones(2))
    assert torch.equal(y, torch.full((2,), 2.0))
    assert double(np.ones(2)).dtype == torch.float64
