"""The registry: names to ops."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
import torch

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


def test_defining_the_same_function_again_replaces_it_with_a_warning(name: str) -> None:
    # What a notebook cell run twice does: the same module, the same function name.
    source = (
        "import numpy as np, npgrad\n"
        f"@npgrad.op({name!r}, signature='(n)->(n)')\n"
        "def scaled(x):\n"
        "    return x * FACTOR\n"
    )
    first: dict = {"__name__": "notebook", "FACTOR": 2.0}
    exec(source, first)
    again: dict = {"__name__": "notebook", "FACTOR": 3.0}
    with pytest.warns(UserWarning, match=rf'npgrad op "{name}": defined again by scaled in '
                      r"module notebook .*the new definition replaces the old one"):  # fmt: skip
        exec(source, again)
    assert npgrad.get(name) is again["scaled"]
    # torch.library keeps its first definition; it now runs the new one.
    namespace, opname = name.split("::")
    traced = getattr(getattr(torch.ops, namespace), opname).default
    (out,) = traced(torch.ones(2))  # the custom op returns a list of outputs
    torch.testing.assert_close(out, torch.full((2,), 3.0))


def test_an_op_saved_from_main_says_so_when_it_cannot_be_found(tmp_path) -> None:
    script = (
        "import sys, numpy as np, torch, npgrad\n"
        "@npgrad.op('mainonly::double')\n"
        "def double(x):\n"
        "    return 2 * x\n"
        "torch.save(npgrad.Layer(double), sys.argv[1])\n"
    )
    path = tmp_path / "layer.pt"
    subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    with pytest.raises(
        UnknownOpError,
        match=r'no op is registered under the name "mainonly::double", and the op was defined '
        r"in __main__ \(a script or notebook\) of the process that saved it.*define the op in "
        r"an importable module",
    ):
        torch.load(path, weights_only=False)
