"""Calling a user's rule: the keywords it declares filled in, looped over batch dims."""

from __future__ import annotations

import numpy as np
import pytest

import npgrad
from npgrad._calls import call_rule
from npgrad._rules import rule


def make_op(name: str, signature: str | None = None) -> npgrad.Op:
    @npgrad.op(name, signature=signature)
    def scale(x, *, k=2.0):
        return k * x

    return scale


def test_a_rule_gets_the_keywords_it_declares_and_no_others(name: str) -> None:
    op = make_op(name)
    seen = {}

    def backward(grad, x, *, k=2.0, needs_input_grad, outputs, lu, unused=None):
        seen.update(k=k, needs=needs_input_grad, outputs=outputs, lu=lu, unused=unused)
        return grad * k

    registered = rule(op._rules, backward, "backward")
    grad = call_rule(
        op._rules, registered, [np.ones(2)], [np.ones(2)], {"k": 3.0}, (True,), "out",
        {"lu": "factor", "other": 1},
    )  # fmt: skip
    np.testing.assert_array_equal(grad, [3.0, 3.0])
    assert seen == {"k": 3.0, "needs": (True,), "outputs": "out", "lu": "factor", "unused": None}


def test_a_looped_rule_sees_one_batch_elements_outputs_and_residuals(name: str) -> None:
    op = make_op(name, signature="(n)->(n)")
    calls = []

    def backward(grad, x, *, k=2.0, outputs, scale):
        calls.append((x.shape, outputs.shape, scale))
        return grad * scale

    registered = rule(op._rules, backward, "backward")
    residuals = np.empty(3, dtype=object)
    for i in range(3):
        residuals[i] = {"scale": float(i)}
    grads = call_rule(
        op._rules, registered, [np.ones((3, 2))], [np.ones((3, 2))], {}, None, np.ones((3, 2)),
        residuals,
    )  # fmt: skip
    np.testing.assert_array_equal(grads, [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    assert calls == [((2,), (2,), 0.0), ((2,), (2,), 1.0), ((2,), (2,), 2.0)]


def test_a_residual_neither_returned_nor_defaulted_is_named(name: str) -> None:
    op = make_op(name)
    registered = rule(op._rules, lambda grad, x, *, lu, k=1: grad, "backward")
    with pytest.raises(
        npgrad.errors.DefinitionError,
        match=r"takes keyword-only parameter\(s\) \['lu'\], which are neither config nor "
        r"residuals \(@scale.save returned \['other'\]\)",
    ):
        call_rule(op._rules, registered, [np.ones(2)], [np.ones(2)], {}, None, None, {"other": 1})
