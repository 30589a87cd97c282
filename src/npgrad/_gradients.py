"""Gradients and tangents from an op's rules, each normalised by one policy (`gradient_for`).

Three ways to a gradient, chosen by the Function's backward:

- `numpy_gradients`: the NumPy backward (or per-input vjps) on the arrays the forward saw. The
  fast path, taken when nothing can differentiate the result again.
- `tensor_gradients`: a tensor backward, called on the saved tensors; torch records it like any
  other code, so it is differentiable to any order.
- `companion_gradients`: the NumPy backward run as its companion op (see `_companions`), an op
  whose own derivative raises `NotTwiceDifferentiableError` and which has a vmap rule. Taken
  under torch.func, under batched gradients, and whenever the result may be differentiated again
  (``create_graph=True``), so that a second derivative through NumPy is a named error wherever
  it is asked for, never a silent zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from npgrad import _torch_internals as internals
from npgrad._calls import call_rule
from npgrad._convert import gradient_for, to_numpy
from npgrad._forward import Call, add_note, check_finite
from npgrad._rules import Rules
from npgrad.errors import (
    GradientError,
    MissingBackwardError,
    NotTwiceDifferentiableError,
    NpgradError,
)

_anomaly_enabled = torch.is_anomaly_enabled


def numpy_gradients(
    state: Call,
    saved: Sequence[torch.Tensor],
    grads: Sequence[Any],
    needs: Sequence[bool],
) -> list[torch.Tensor | None]:
    """Call the NumPy backward on arrays (``grads`` as arrays too); convert what it returns."""
    rules = state.rules
    inputs = state.arrays
    if rules.plain_backward:
        # user_gradients' common case, inlined: it runs on every backward.
        try:
            raw = rules.backward.fn(*grads, *inputs, **state.config)  # type: ignore[union-attr]
        except Exception as error:
            add_note(error, rules, "backward")
            raise
        if type(raw) is not tuple or len(raw) != state.count:
            raw = checked_count(rules, raw, state.count)
    else:
        outputs: Any = None
        if rules.saves_outputs:
            held = state.count if state.slots is None else len(state.slots)
            outputs = saved_outputs([to_numpy(t) for t in saved[held:]], state.single)
        raw = user_gradients(rules, grads, inputs, state.config, needs, outputs, state.residuals)
    device = state.device
    result: list[torch.Tensor | None] = [None] * state.count
    slots = state.slots
    for k, i in enumerate(range(state.count) if slots is None else slots):
        if needs[i]:
            gradient = raw[i]
            if gradient is None:
                raise none_for_a_needed_gradient(rules, i)
            result[i] = gradient_for(gradient, saved[k], device, i, rules)
    if _anomaly_enabled():
        _check_gradients(rules, result)
    return result


def tensor_gradients(
    state: Call,
    saved: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    needs: Sequence[bool],
) -> list[torch.Tensor | None]:
    """Call the tensor backward on the saved tensors; check, reduce and cast what it returns."""
    rules = state.rules
    inputs, held = saved_inputs(state, saved)
    outputs = saved_outputs(held, state.single)
    raw = user_gradients(rules, grads, inputs, state.config, needs, outputs, state.residuals)
    return normalised(rules, raw, inputs, needs)


def companion_gradients(
    companion: Callable[..., Any],
    state: Call,
    saved: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    needs: Sequence[bool],
) -> list[torch.Tensor | None]:
    """Run the NumPy backward as its companion op; check, reduce and cast what it returns."""
    inputs, held = saved_inputs(state, saved)
    raw = companion(
        *grads,
        *inputs,
        *held,
        **state.config,
        needs_input_grad=tuple(needs),
        single_output=state.single,
        residuals=state.residuals,
    )
    return normalised(state.rules, raw, inputs, needs)


def normalised(
    rules: Rules, raw: Sequence[Any], inputs: Sequence[Any], needs: Sequence[bool]
) -> list[torch.Tensor | None]:
    result: list[torch.Tensor | None] = [None] * len(inputs)
    for i, (gradient, value) in enumerate(zip(raw, inputs, strict=True)):
        if needs[i] and isinstance(value, torch.Tensor):
            if gradient is None:
                raise none_for_a_needed_gradient(rules, i)
            result[i] = gradient_for(gradient, value, value.device, i, rules)
    if _anomaly_enabled():
        _check_gradients(rules, result)
    return result


def user_gradients(
    rules: Rules,
    grads: Sequence[Any],
    inputs: Sequence[Any],
    config: dict[str, Any],
    needs: Sequence[bool],
    outputs: Any,
    residuals: Any,
) -> Sequence[Any]:
    """Call the op's backward (or its vjps) and return one gradient per input, None allowed.

    Arrays for a NumPy backward (looped over the signature's batch dims), tensors for a tensor
    backward.
    """
    n = len(inputs)
    for i in rules.nondifferentiable:
        if i < len(needs) and needs[i]:
            raise not_differentiated(rules, i)
    whole = rules.backward or rules.tensor_backward
    if whole is not None:
        tensor = whole is rules.tensor_backward
        try:
            raw = call_rule(rules, whole, grads, inputs, config, needs, outputs, residuals, tensor)
        except Exception as error:
            add_note(error, rules, "tensor backward" if tensor else "backward")
            raise
        return checked_count(rules, raw, n)
    gradients: list[Any] = [None] * n
    for i in range(n):
        if not needs[i]:
            continue
        vjp = rules.vjps.get(i)
        if vjp is None:
            raise missing_backward(rules, i)
        try:
            gradients[i] = call_rule(rules, vjp, grads, inputs, config, needs, outputs, residuals)
        except Exception as error:
            add_note(error, rules, f'vjp of input "{rules.input_name(i)}"')
            raise
    return gradients


def checked_count(rules: Rules, raw: Any, n: int) -> Sequence[Any]:
    """Return a backward's result as one gradient per input (a lone one for one input)."""
    if not isinstance(raw, (tuple, list)):
        if n == 1:
            return (raw,)
        raise GradientError(
            f'npgrad op "{rules.name}": backward returned a single {type(raw).__name__} '
            f"for {n} positional inputs ({_names(rules, n)}); return a tuple of {n} "
            f"gradients, one per input in order, with None for an input that needs none"
        )
    if len(raw) != n:
        raise GradientError(
            f'npgrad op "{rules.name}": backward returned {len(raw)} gradients for {n} '
            f"positional inputs ({_names(rules, n)}); return one gradient per input, in "
            f"order, with None for an input that needs none"
        )
    return raw


def saved_inputs(
    state: Call, saved: Sequence[torch.Tensor]
) -> tuple[list[Any], list[torch.Tensor]]:
    """Return the inputs (tensors where saved, constants elsewhere) and the saved outputs.

    For rules that compute with ops (a tensor backward, a companion): a transform's wrappers
    that outlived it are unwrapped, so that what they compute attaches to the real inputs.
    """
    saved = internals.unwrap_dead(saved)
    slots = range(state.count) if state.slots is None else state.slots
    inputs: list[Any] = [None] * state.count if state.constants is None else list(state.constants)
    for k, i in enumerate(slots):
        inputs[i] = saved[k]
    return inputs, saved[len(slots) :]


def saved_outputs(held: Sequence[Any], single: bool) -> Any:
    """Return the outputs saved after the inputs: one value, a tuple, or None if none were."""
    if not held:
        return None
    return held[0] if single else tuple(held)


def _check_gradients(rules: Rules, gradients: Sequence[torch.Tensor | None]) -> None:
    for i, gradient in enumerate(gradients):
        check_finite(rules, gradient, f'the gradient for input "{rules.input_name(i)}"')


def _names(rules: Rules, n: int) -> str:
    return ", ".join(rules.input_name(i) for i in range(n))


def missing_backward(rules: Rules, position: int) -> NpgradError:
    """The error for a gradient asked of an input that has no rule for it."""
    if rules.parent is not None:
        return not_twice_differentiable(rules.parent)
    name = rules.input_name(position)
    var = rules.variable
    # A variadic input is named by its position.
    key = f'"{name}"' if position < rules.arity else str(position)
    how = (
        f"@{var}.vjp({key})"
        if rules.vjps
        else f"@{var}.backward (or one per input with @{var}.vjp({key}))"
    )
    return MissingBackwardError(
        f'npgrad op "{rules.name}": a gradient was asked for input "{name}" (position '
        f"{position}), but no backward is registered for it; register one with {how}"
    )


def not_differentiated(rules: Rules, position: int) -> MissingBackwardError:
    """The error for a gradient or tangent asked of an input declared nondifferentiable."""
    return MissingBackwardError(
        f'npgrad op "{rules.name}": a gradient was asked for input '
        f'"{rules.input_name(position)}" (position {position}), which the op does not '
        f"differentiate (npgrad.op(nondifferentiable=...)); pass it as a constant (a number, "
        f"or a tensor that does not require grad and has no tangent)"
    )


def none_for_a_needed_gradient(rules: Rules, position: int) -> GradientError:
    """The error for a gradient rule that returned None for an input needing a gradient."""
    rule, name = rules.describe(position)[1:3]
    return GradientError(
        f'npgrad op "{rules.name}": {rule} returned None as the gradient for input "{name}" '
        f"(position {position}), which needs one; expected its gradient: return it (zeros "
        f"where the outputs do not depend on the input), and None only where "
        f"needs_input_grad is False"
    )


def none_for_a_tangent(rules: Rules, output: int) -> GradientError:
    """The error for a jvp that returned None as the tangent of a differentiable output."""
    return GradientError(
        f'npgrad op "{rules.name}": jvp returned None as the tangent of output {output}, which '
        f"is differentiable; expected a tangent shaped like the output: return it (zeros where "
        f"it does not depend on the inputs), and None only for integer or bool outputs"
    )


def wrong_tangent_count(rules: Rules, got: int, outputs: int) -> GradientError:
    """The error for a jvp that returned another number of tangents than there are outputs."""
    return GradientError(
        f'npgrad op "{rules.name}": jvp returned {got} tangent(s) for {outputs} output(s); '
        f"expected one tangent per output, a bare array for an op returning one array and a "
        f"tuple for an op returning a tuple"
    )


def not_twice_differentiable(rules: Rules) -> NotTwiceDifferentiableError:
    """The error for a derivative asked through an op's NumPy backward or NumPy jvp."""
    var = rules.variable
    fix = (
        f"its jvp is NumPy, though its backward is made of ops: remove the @{var}.jvp (the "
        f"tensor backward gives forward mode to any order) or write it with ops as "
        f"@{var}.tensor_jvp"
        if rules.tensor_backward is not None
        else f"write the backward with npgrad ops and torch ops on tensors "
        f"(@{var}.tensor_backward) to make the op differentiable to any order"
    )
    return NotTwiceDifferentiableError(
        f'npgrad op "{rules.name}": asked for a second derivative, but its gradient rules are '
        f"written in NumPy and are differentiable once; {fix}"
    )
