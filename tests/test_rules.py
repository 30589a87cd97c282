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
        "numerical_gradient",
        "shape",
        "save",
        "example",
        "output_shapes",
    }


def test_a_backward_that_cannot_take_the_inputs_is_refused_when_registered(name: str) -> None:
    @npgrad.op(name)
    def mul(x, w, *, mode="valid"):
        return x * w

    with pytest.raises(
        npgrad.errors.DefinitionError,
        match=rf'npgrad op "{name}": @mul.backward takes 2 positional parameter\(s\); it is '
        r"called with one or more output gradient\(s\), then the 2 input\(s\) \(x, w\), then "
        r"the config \(mode\) as keywords",
    ):
        mul.backward(lambda grad, x, *, mode="valid": grad)
    with pytest.raises(npgrad.errors.DefinitionError, match=r"does not take the config \['mode'\]"):
        mul.backward(lambda grad, x, w: (grad, grad))
    with pytest.raises(npgrad.errors.DefinitionError, match=r"@mul.jvp takes 3 positional"):
        mul.jvp(lambda tx, tw, x, *, mode="valid": tx)
    mul.backward(lambda grad, x, w, **config: (grad * w, grad * x))  # **config takes any


@pytest.mark.parametrize("namespace", ["aten", "prims", "_private"])
def test_torch_namespaces_are_refused(name: str, namespace: str) -> None:
    with pytest.raises(
        npgrad.errors.DefinitionError,
        match=rf'npgrad op "{namespace}::mine": the namespace "{namespace}" belongs to torch',
    ):
        npgrad.op(f"{namespace}::mine")(lambda x: x)


def test_a_name_torch_ops_has_already_is_refused(name: str) -> None:
    namespace, opname = name.split("::")
    library = torch.library.Library(namespace, "FRAGMENT")
    library.define(f"{opname}(Tensor x) -> Tensor")
    with pytest.raises(
        npgrad.errors.DefinitionError,
        match=rf'npgrad op "{name}": torch.ops already has an operator of that name, defined '
        r"outside npgrad",
    ):
        npgrad.op(name)(lambda x: x)


def test_nondifferentiable_names_positional_inputs(name: str) -> None:
    with pytest.raises(
        npgrad.errors.DefinitionError,
        match=r"nondifferentiable names 'order', which is not one of its positional inputs "
        r"\(x\)",
    ):
        npgrad.op(name, nondifferentiable=("order",))(lambda x: x)
