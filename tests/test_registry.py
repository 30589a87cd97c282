"""The registry: names to ops."""

from __future__ import annotations

import threading

import pytest

import npgrad
from npgrad.errors import DefinitionError, UnknownOpError


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
        rf".*test_registry.py:\d+; the new definition at .*test_registry.py:\d+ was refused",
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
