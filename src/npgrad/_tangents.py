"""Output tangents (forward mode) of a call, from the op's jvp or from its tensor backward.

A NumPy jvp runs as the op's jvp companion (see `_companions`), whose own derivatives are the
op's `NotTwiceDifferentiableError`. An op with a tensor backward and no jvp gets forward mode
from the backward: it is linear in the output gradients, backward(g) = J^T g, so J t is the
gradient of <backward(g), t> in g, computed by torch with ops, exact and differentiable again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from npgrad import _torch_internals as internals
from npgrad._forward import Call
from npgrad._gradients import (
    normalised,
    not_twice_differentiable,
    saved_inputs,
    saved_outputs,
    user_gradients,
)
from npgrad._rules import Rules
from npgrad.errors import MissingBackwardError, NpgradError


def tangents(
    companion: Callable[..., Any] | None,
    state: Call,
    saved: Sequence[torch.Tensor],
    tangents: Sequence[torch.Tensor | None],
) -> Any:
    """Return the output tangents of a call for its input tangents (None: no tangent)."""
    rules = state.rules
    if rules.jvp is None and rules.tensor_backward is None:
        raise missing_jvp(rules)
    inputs, outputs = saved_inputs(state, saved)
    held = [] if outputs is None else list(outputs) if isinstance(outputs, tuple) else [outputs]
    filled = [
        (torch.zeros_like(value) if isinstance(value, torch.Tensor) else 0.0)
        if tangent is None
        else tangent
        for tangent, value in zip(tangents, inputs, strict=True)
    ]
    with internals.jvp_rule_scope([*inputs, *held], filled) as stripped:
        if stripped is not None:
            values, filled = stripped
            inputs, held = values[: len(inputs)], values[len(inputs) :]
            outputs = saved_outputs(held, state.single)
        if rules.jvp is None:
            if stripped is None:
                raise missing_jvp(rules, derived=False)
            return _transposed_backward(state, inputs, filled, outputs)
        assert companion is not None
        return companion(
            *filled,
            *inputs,
            *held,
            **state.config,
            input_count=len(inputs),
            single_output=state.single,
            residuals=state.residuals,
        )


def _transposed_backward(
    state: Call, inputs: Sequence[Any], tangents: Sequence[Any], outputs: Any
) -> Any:
    """Forward mode from a tensor backward: J t is the gradient of <backward(g), t> in g.

    The backward is linear in the output gradients g: backward(g) = J^T g. So the vjp of
    ``g -> backward(g)`` with the input tangents as cotangents is J t, exact, and made of ops
    again (differentiable to any order).
    """
    rules = state.rules
    single = not isinstance(outputs, tuple)
    held = (outputs,) if single else outputs
    positions = [
        i
        for i, value in enumerate(inputs)
        if isinstance(value, torch.Tensor) and value.is_floating_point()
    ]
    needs = [i in positions for i in range(len(inputs))]

    def backward(*grads: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raw = user_gradients(rules, grads, inputs, state.config, needs, outputs, state.residuals)
        gradients = normalised(rules, raw, inputs, needs)
        return tuple(_or_zeros(gradients[i], inputs[i]) for i in positions)

    zeros = [torch.zeros_like(output) for output in held]
    pullback = torch.func.vjp(backward, *zeros)[1]
    result = pullback(tuple(tangents[i] for i in positions))
    return result[0] if single else tuple(result)


def _or_zeros(gradient: torch.Tensor | None, input: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(input) if gradient is None else gradient


def missing_jvp(rules: Rules, derived: bool = True) -> NpgradError:
    """The error for forward mode asked of an op with no jvp (and no tensor backward)."""
    if rules.parent is not None:
        return not_twice_differentiable(rules.parent)
    why = (
        "needs a jvp, and none is registered; register one with "
        f"@{rules.variable}.jvp (a tensor backward gives forward mode too)"
        if derived
        else "needs a jvp: forward mode from the tensor backward needs torch's internals, "
        f"which NPGRAD_TORCH_INTERNALS=0 turned off; register one with @{rules.variable}.jvp"
    )
    return MissingBackwardError(
        f'npgrad op "{rules.name}": forward-mode AD (torch.func.jvp, jacfwd, torch.func.hessian, '
        f"forward_ad) {why}"
    )
