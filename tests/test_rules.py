"""An op's record: what a definition may be, and what each registration changes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import npgrad
from npgrad import _rules
from npgrad.errors import DefinitionError


@pytest.mark.parametrize("bad", ["plain", "a::b::c", "a::", "1a::b", "a b::c"])
def test_names_must_be_namespace_and_name(bad: str) -> None:
    with pytest.raises(DefinitionError, match=r'is not of the form "namespace::name"'):
        npgrad.op(bad)(lambda x: x)


def test_config_may_not_shadow_backward_extras(name: str) -> None:
    with pytest.raises(DefinitionError, match=r"keyword config \['outputs'\] uses a name npgrad"):

        @npgrad.op(name)
        def bad(x, *, outputs=1):
            return x


def test_each_registration_makes_a_new_record_read_by_later_calls(name: str) -> None:
    @npgrad.op(name)
    def exp(x):
        return np.exp(x)

    first = exp._rules
    assert first.keeps_only_inputs
    assert not first.saves_outputs
    y_before = exp(torch.ones(2, requires_grad=True))

    @exp.backward
    def _(grad, x, *, outputs):
        return grad * outputs

    # Derived fields follow the rules: nothing to refresh by hand.
    assert exp._rules is not first
    assert exp._rules.saves_outputs
    assert not exp._rules.keeps_only_inputs
    with pytest.raises(dataclasses.FrozenInstanceError):
        exp._rules.backward = None  # type: ignore[misc]
    # A call made before the registration keeps the rules it was made with.
    with pytest.raises(npgrad.errors.MissingBackwardError):
        y_before.sum().backward()
    x = torch.ones(2, dtype=torch.float64, requires_grad=True)
    exp(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.exp(x.detach()))


def test_rules_read_their_keywords(name: str) -> None:
    @npgrad.op(name)
    def op(x, *, mode="a"):
        return x

    rule = _rules.rule(op._rules, lambda g, x, *, mode="a", lu, outputs=None, **more: g, "backward")
    assert rule.takes == {"lu", "outputs"}
    assert rule.required == {"lu"}
    assert rule.any_keyword
    assert not rule.config_only


def test_the_public_op_shows_nothing_internal(name: str) -> None:
    @npgrad.op(name)
    def op(x):
        return x

    public = {attribute for attribute in vars(op) if not attribute.startswith("_")}
    assert public == {"name", "forward", "examples"}
    methods = {name for name in dir(type(op)) if not name.startswith("_")}
    assert methods == {
        "backward",
        "tensor_backward",
        "vjp",
        "jvp",
        "tensor_jvp",
        "shape",
        "save",
        "example",
        "output_shapes",
    }
