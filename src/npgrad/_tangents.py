"""Output tangents (forward mode) of a call, from the op's jvp or from its tensor backward.

A NumPy jvp runs as the op's jvp companion (see `_companions`), whose own derivatives are the
op's `NotTwiceDifferentiableError`. A tensor jvp is called on the tensors, with the rule's own
forward level stripped, so that outer levels differentiate its ops. An op with a tensor
backward and no jvp gets forward mode from the backward: it is linear in the output gradients,
backward(g) = J^T g, so J t is the gradient of <backward(g), t> in g, computed by torch with
ops, exact and differentiable again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from npgrad import _torch_internals as internals
from npgrad._calls import call_rule
from npgrad._convert import differentiable
from npgrad._forward import Call, add_note
from npgrad._gradients import (
    none_for_a_tangent,
    normalised,
    not_differentiated,
    not_twice_differentiable,
    saved_inputs,
    saved_outputs,
    user_gradients,
    wrong_tangent_count,
)
from npgrad._rules import Rules
from npgrad.errors import GradientError, MissingBackwardError, NpgradError


def tangents(
    companion: Callable[..., Any] | None,
    state: Call,
    saved: Sequence[torch.Tensor],
    tangents: Sequence[torch.Tensor | None],
) -> Any:
    """Return the output tangents of a call for its input tangents (None: no tangent)."""
    rules = state.rules
    if rules.jvp is None and rules.tensor_jvp is None and rules.tensor_backward is None:
        raise missing_jvp(rules)
    inputs, held = saved_inputs(state, saved)
    given = [tangent is not None for tangent in tangents]
    for i in rules.nondifferentiable:
        if i < len(given) and given[i]:
            raise not_differentiated(rules, i)
    filled = [
        (torch.zeros_like(value) if isinstance(value, torch.Tensor) else 0.0)
        if tangent is None
        else tangent
        for tangent, value in zip(tangents, inputs, strict=True)
    ]
    floating = tuple(differentiable(dtype) for _, dtype, _ in state.output_meta)
    with internals.jvp_rule_scope([*inputs, *held], filled) as stripped:
        if stripped is not None:
            values, filled = stripped
            inputs, held = values[: len(inputs)], values[len(inputs) :]
        if rules.tensor_jvp is not None:
            result = _tensor_jvp(state, inputs, filled, held, stripped is None)
        elif rules.jvp is None:
            result = _transposed_backward(state, inputs, filled, given, held, stripped is None)
        else:
            assert companion is not None
            result = companion(
                *filled,
                *inputs,
                *held,
                **state.config,
                input_count=len(inputs),
                single_output=state.single,
                differentiable=floating,
                residuals=state.residuals,
            )
    return _as_tangents(rules, state, result)


def _as_tangents(rules: Rules, state: Call, result: Any) -> Any:
    """Shape each tangent like its output (broadcasting); None for outputs without one."""
    got = (result,) if state.single else tuple(result)
    checked: list[torch.Tensor | None] = []
    for k, (tangent, (shape, dtype, _)) in enumerate(zip(got, state.output_meta, strict=True)):
        if not differentiable(dtype):
            checked.append(None)  # torch wants None for a non-differentiable output
            continue
        if tuple(tangent.shape) != shape:
            try:
                tangent = tangent.expand(shape)
            except RuntimeError:
                raise GradientError(
                    f'npgrad op "{rules.name}": jvp returned a tangent of shape '
                    f"{tuple(tangent.shape)} for output {k} of shape {shape}; expected one tangent "
                    f"per output, shaped like it (or like a broadcast of it)"
                ) from None
        checked.append(tangent)
    return checked[0] if state.single else tuple(checked)


def _tensor_jvp(
    state: Call,
    inputs: Sequence[Any],
    tangents: Sequence[Any],
    held: Sequence[torch.Tensor],
    public: bool,
) -> Any:
    """Call the tensor jvp on the tensors; count and check the tangents it returns.

    ``public``: torch's internals are off, so the rule's own level could not be stripped and
    forward mode stays off inside it: right for one level of eager forward_ad, a silent zero
    for an outer torch.func level. Under torch.func it is refused then.
    """
    rules = state.rules
    if public:
        try:
            torch.zeros(()).requires_grad_()
        except RuntimeError as error:  # under a torch.func transform
            raise missing_jvp(rules, derived=False) from error
    assert rules.tensor_jvp is not None
    outputs = saved_outputs(held, state.single)
    try:
        result = call_rule(
            rules, rules.tensor_jvp, tangents, inputs, state.config, None, outputs,
            state.residuals, tensor=True, jvp=True,
        )  # fmt: skip
    except Exception as error:
        add_note(error, rules, "tensor jvp")
        raise
    got = tuple(result) if isinstance(result, (tuple, list)) else (result,)
    if len(got) != len(state.output_meta):
        raise wrong_tangent_count(rules, len(got), len(state.output_meta))
    for k, (tangent, (_, dtype, _)) in enumerate(zip(got, state.output_meta, strict=True)):
        if tangent is None and differentiable(dtype):
            raise none_for_a_tangent(rules, k)
    return got[0] if state.single else got


def _transposed_backward(
    state: Call,
    inputs: Sequence[Any],
    tangents: Sequence[Any],
    given: Sequence[bool],
    held: Sequence[torch.Tensor],
    public: bool,
) -> Any:
    """Forward mode from a tensor backward: J t is the gradient of <backward(g), t> in g.

    The backward is linear in the output gradients g: backward(g) = J^T g. So the vjp of
    ``g -> backward(g)`` with the input tangents as cotangents is J t, exact, and made of ops
    again (differentiable to any order). Only the inputs given a tangent are asked for a
    gradient, and only the floating outputs get one.

    ``public``: torch's internals are off, so the rule's own level could not be stripped. Then
    regular autograd takes the vjp, which leaves forward mode off inside (one level of eager
    forward_ad, as ``gradcheck(check_forward_ad=True)`` runs); under torch.func it cannot.
    """
    rules = state.rules
    outputs = saved_outputs(held, state.single)
    needs = [
        given[i] and isinstance(value, torch.Tensor) and differentiable(value.dtype)
        for i, value in enumerate(inputs)
    ]
    positions = [i for i, need in enumerate(needs) if need]
    floating = [k for k, output in enumerate(held) if differentiable(output.dtype)]

    def backward(*float_grads: torch.Tensor) -> tuple[torch.Tensor, ...]:
        grads = [torch.zeros_like(output) for output in held]
        for k, grad in zip(floating, float_grads, strict=True):
            grads[k] = grad
        raw = user_gradients(rules, grads, inputs, state.config, needs, outputs, state.residuals)
        gradients = normalised(rules, raw, inputs, needs)
        return tuple(gradients[i] for i in positions)  # type: ignore[misc]

    cotangents = tuple(tangents[i] for i in positions)
    # The vjp of a linear map is the same at every point: taken at ones, not zeros, so that a
    # backward which shortcuts a zero gradient (an iterative solve that stops at once) cannot
    # hide its dependence on g.
    if public:
        try:
            points = [torch.ones_like(held[k]).requires_grad_() for k in floating]
        except RuntimeError as error:  # under a torch.func transform: no regular autograd
            raise missing_jvp(rules, derived=False) from error
        with torch.enable_grad():
            computed = iter(
                torch.autograd.grad(
                    backward(*points), points, cotangents, create_graph=True, allow_unused=True
                )
            )
    else:
        points = [torch.ones_like(held[k]) for k in floating]
        computed = iter(torch.func.vjp(backward, *points)[1](cotangents))
    result = [next(computed) if k in floating else torch.zeros(()) for k in range(len(held))]
    return result[0] if state.single else tuple(result)


def missing_jvp(rules: Rules, derived: bool = True) -> NpgradError:
    """The error for forward mode asked of an op with no jvp (and no tensor backward)."""
    if rules.parent is not None:
        return not_twice_differentiable(rules.parent)
    why = (
        "needs a jvp, and none is registered; register one with "
        f"@{rules.variable}.jvp (a tensor backward gives forward mode too)"
        if derived
        else "needs a jvp: forward mode from the tensor backward under torch.func needs "
        f"torch's internals, which NPGRAD_TORCH_INTERNALS=0 turned off; register one with "
        f"@{rules.variable}.jvp, or use torch.autograd.forward_ad"
    )
    return MissingBackwardError(
        f'npgrad op "{rules.name}": forward-mode AD (torch.func.jvp, jacfwd, torch.func.hessian, '
        f"forward_ad, jacobian(strategy='forward-mode'), gradcheck(check_forward_ad=True)) {why}"
    )
