"""Gradients of an op computed from its forward alone: finite differences and the complex step.

`rules_for` makes a NumPy backward and a NumPy jvp out of the forward, registered by
``op.numerical_gradient``. Design requirements:

- only the inputs that need a gradient are perturbed, and only in their core dims: an op with a
  signature maps each batch element on its own, so one perturbation of a core element serves
  the whole batch at once;
- the perturbed evaluations run as one batched call where the op has a signature (the
  perturbations become one more batch dim, looped on npgrad's threads or handled by a
  vectorized forward), else as separate calls on the threads;
- everything is computed in float64 (complex128), whatever the inputs' dtype;
- steps are the textbook choices, scaled by each element's magnitude: eps^(1/2) (forward),
  eps^(1/3) (central), 1e-20 (complex step, exact to rounding for real-analytic functions);
- gradients follow torch's convention for complex values (dL/dRe + i dL/dIm).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from npgrad import _batch, _executors
from npgrad._rules import Rule, Rules
from npgrad._threads import parallel_map
from npgrad.errors import DefinitionError, InputError

Array = np.ndarray[Any, Any]
METHODS = ("forward", "central", "complex-step")
_EPS = float(np.finfo(np.float64).eps)
_DEFAULT_STEP = {"forward": math.sqrt(_EPS), "central": _EPS ** (1 / 3), "complex-step": 1e-20}
# The relative error each method has on a smooth function with its default step.
NOMINAL_ERROR = {"forward": math.sqrt(_EPS), "central": _EPS ** (2 / 3), "complex-step": _EPS}
# Elements of perturbed copies one batched evaluation may hold.
_CHUNK = 1 << 22


@dataclass(frozen=True)
class Numerical:
    """How an op's gradient is computed from its forward."""

    method: str
    step: float | None

    def relative_step(self) -> float:
        return _DEFAULT_STEP[self.method] if self.step is None else self.step


# Estimated errors measured by npgrad.check, by op name: repr(op) shows the latest.
measured_errors: dict[str, float] = {}


def numerical(rules: Rules, method: str, step: float | None) -> Numerical:
    """Check and return the choice of a numerical gradient for ``rules``' op."""
    if method not in METHODS:
        raise DefinitionError(
            f'npgrad op "{rules.name}": numerical_gradient(method={method!r}); expected one of '
            f"{', '.join(repr(m) for m in METHODS)}"
        )
    if step is not None and not (isinstance(step, (int, float)) and 0 < step < 1):
        raise DefinitionError(
            f'npgrad op "{rules.name}": numerical_gradient(step={step!r}); expected a relative '
            f"step between 0 and 1 (each element moves by step * max(|x|, 1)), or None for "
            f"the default of the method"
        )
    return Numerical(method, None if step is None else float(step))


def rules_for(rules: Rules, choice: Numerical) -> tuple[Rule, Rule]:
    """Return the backward and the jvp rules that compute ``rules``' derivatives numerically."""
    n = rules.arity

    def backward(*args: Any, needs_input_grad: tuple[bool, ...], **config: Any) -> list[Any]:
        grads, inputs = args[: len(args) - n], args[len(args) - n :]
        return gradients(rules, choice, grads, inputs, _config(rules, config), needs_input_grad)

    def jvp(*args: Any, **config: Any) -> Any:
        return tangents(rules, choice, args[:n], args[n:], _config(rules, config))

    def made(fn: Callable[..., Any], takes: frozenset[str]) -> Rule:
        return Rule(fn, takes, takes, any_keyword=True, batched=True)

    return made(backward, frozenset({"needs_input_grad"})), made(jvp, frozenset())


def _config(rules: Rules, config: dict[str, Any]) -> dict[str, Any]:
    # The rules receive residuals too (they take **config): the forward takes config alone.
    return {key: value for key, value in config.items() if key in rules.config_names}


def gradients(
    rules: Rules,
    choice: Numerical,
    grads: Sequence[Any],
    inputs: Sequence[Any],
    config: dict[str, Any],
    needs: Sequence[bool],
    step: float | None = None,
) -> list[Any]:
    """Return each input's gradient (None where not needed) for the output gradients."""
    h = choice.relative_step() if step is None else step
    result: list[Any] = []
    for i, value in enumerate(inputs):
        if not needs[i] or not isinstance(value, np.ndarray):
            result.append(None)
            continue
        x = _wide(value)
        core = _core_ndim(rules, i, x)
        directions = _directions(x, core, choice.method, rules)
        derivatives = _derivatives(rules, choice.method, inputs, config, i, x, core, directions, h)
        gradient = np.zeros(_gradient_shape(derivatives, x, core, rules), dtype=x.dtype)
        for (index, imaginary), derivative in zip(directions, derivatives, strict=True):
            contribution = _contract(grads, derivative, rules)
            # dL/dRe + i dL/dIm: torch's gradient of a complex input.
            part = gradient[_at(index)]
            gradient[_at(index)] = part + (1j * contribution if imaginary else contribution)
        result.append(gradient)
    return result


def tangents(
    rules: Rules,
    choice: Numerical,
    tangent_values: Sequence[Any],
    inputs: Sequence[Any],
    config: dict[str, Any],
) -> Any:
    """Return the output tangents for the input tangents, one directional difference."""
    moving = [
        i
        for i, (t, x) in enumerate(zip(tangent_values, inputs, strict=True))
        if isinstance(x, np.ndarray) and isinstance(t, np.ndarray) and np.any(t != 0)
    ]
    outputs = _as_tuple(_evaluate_plain(rules, inputs, config))
    if not moving:
        return _shaped([np.zeros(np.shape(o)) for o in outputs])
    scale = max(max(float(np.max(np.abs(inputs[i]), initial=0.0)) for i in moving), 1.0)
    size = max(float(np.max(np.abs(tangent_values[i]))) for i in moving)
    h = choice.relative_step() * scale / size
    if choice.method == "complex-step":
        _refuse_complex(rules, [inputs[i] for i in moving] + [tangent_values[i] for i in moving])
        shifted = _shift(inputs, tangent_values, moving, 1j * h)
        result = [np.imag(o) / h for o in _as_tuple(_evaluate_plain(rules, shifted, config))]
    elif choice.method == "central":
        up = _as_tuple(_evaluate_plain(rules, _shift(inputs, tangent_values, moving, h), config))
        down = _as_tuple(_evaluate_plain(rules, _shift(inputs, tangent_values, moving, -h), config))
        result = [(u - d) / (2 * h) for u, d in zip(up, down, strict=True)]
    else:
        up = _as_tuple(_evaluate_plain(rules, _shift(inputs, tangent_values, moving, h), config))
        result = [(u - o) / h for u, o in zip(up, outputs, strict=True)]
    return _shaped(result)


def _shaped(result: list[Any]) -> Any:
    return result[0] if len(result) == 1 else tuple(result)


def _shift(
    inputs: Sequence[Any], directions: Sequence[Any], moving: list[int], h: Any
) -> list[Any]:
    shifted = list(inputs)
    for i in moving:
        shifted[i] = _wide(inputs[i]) + h * directions[i]
    return shifted


def _wide(value: Array) -> Array:
    """Return ``value`` in float64 (complex128), a copy the perturbations may write into."""
    dtype = np.complex128 if value.dtype.kind == "c" else np.float64
    return np.array(value, dtype=dtype)


def _core_ndim(rules: Rules, position: int, x: Array) -> int:
    if rules.signature is None:
        return x.ndim
    return len(rules.signature.inputs[position])


def _directions(
    x: Array, core: int, method: str, rules: Rules
) -> list[tuple[tuple[int, ...], bool]]:
    """Return each direction to perturb: a core index, and whether along the imaginary part."""
    if method == "complex-step" and x.dtype.kind == "c":
        raise InputError(
            f'npgrad op "{rules.name}": the complex-step gradient needs real inputs, but got a '
            f"complex one; register numerical_gradient(method='central') for complex inputs"
        )
    indices = list(np.ndindex(x.shape[x.ndim - core :]))
    parts = (False, True) if x.dtype.kind == "c" else (False,)
    return [(index, imaginary) for index in indices for imaginary in parts]


def _derivatives(
    rules: Rules,
    method: str,
    inputs: Sequence[Any],
    config: dict[str, Any],
    position: int,
    x: Array,
    core: int,
    directions: list[tuple[tuple[int, ...], bool]],
    relative: float,
) -> list[tuple[Array, ...]]:
    """Return, per direction, the derivative of every output along it (batched evaluations)."""
    magnitude = np.maximum(np.abs(x), 1.0)
    steps = []
    shifted = []
    for index, imaginary in directions:
        h = relative * magnitude[_at(index)]
        if method != "complex-step":
            # A step the floating point can represent exactly: (x + h) - x.
            h = (x.real[_at(index)] + h) - x.real[_at(index)]
        unit = 1j if imaginary or method == "complex-step" else 1.0
        signs = (1.0, -1.0) if method == "central" else (1.0,)
        for sign in signs:
            moved = x.astype(np.complex128) if method == "complex-step" else x.copy()
            moved[_at(index)] = moved[_at(index)] + sign * unit * h
            shifted.append(moved)
        steps.append(h)
    evaluated = _evaluate_many(rules, inputs, config, position, shifted)
    base = None if method != "forward" else _as_tuple(_evaluate_plain(rules, inputs, config))
    derivatives = []
    per = 2 if method == "central" else 1
    for k, h in enumerate(steps):
        first = evaluated[per * k]
        if method == "central":
            second = evaluated[per * k + 1]
            derivative = tuple(
                (a - b) / _span(2 * h, a) for a, b in zip(first, second, strict=True)
            )
        elif method == "forward":
            assert base is not None
            derivative = tuple((a - b) / _span(h, a) for a, b in zip(first, base, strict=True))
        else:
            derivative = tuple(np.imag(a) / _span(h, a) for a in first)
        derivatives.append(derivative)
    return derivatives


def _at(index: tuple[int, ...]) -> tuple[Any, ...]:
    """The position of one core element in every batch element."""
    return (Ellipsis, *index)


def _span(h: Any, output: Array) -> Any:
    """Return the step, shaped to divide an output (batch dims lead both)."""
    h = np.asarray(h)
    return h.reshape(h.shape + (1,) * (np.ndim(output) - h.ndim)) if h.ndim else h


def _evaluate_plain(rules: Rules, inputs: Sequence[Any], config: dict[str, Any]) -> Any:
    wide = [_wide(a) if isinstance(a, np.ndarray) else a for a in inputs]
    if rules.looped:
        assert rules.signature is not None
        return _batch.loop(rules.forward, rules.signature, rules.name, wide, config)
    return rules.forward(*wide, **config)


def _evaluate_many(
    rules: Rules,
    inputs: Sequence[Any],
    config: dict[str, Any],
    position: int,
    copies: list[Array],
) -> list[tuple[Array, ...]]:
    """Evaluate the forward with input ``position`` replaced by each copy, in order."""
    wide = [_wide(a) if isinstance(a, np.ndarray) else a for a in inputs]
    if rules.signature is None:

        def one(copy: Array) -> tuple[Array, ...]:
            args = list(wide)
            args[position] = copy
            return tuple(np.asarray(o) for o in _as_tuple(rules.forward(*args, **config)))

        pool = _executors.current(rules.name)
        if pool is not None:
            found: list[tuple[Array, ...]] = _executors.run(
                one, [(copies, True)], len(copies), pool, rules.name, (len(copies),)
            )
            return found
        return parallel_map(one, copies)
    # The copies as one more batch dim, in front of every input's batch dims: one call per
    # chunk.
    signature = rules.signature
    batch_ndim = max(
        np.ndim(a) - len(core)
        for a, core in zip(wide, signature.inputs, strict=True)
        if isinstance(a, np.ndarray)
    )
    lead = (1,) * (batch_ndim - (copies[0].ndim - len(signature.inputs[position])))
    per_chunk = max(1, _CHUNK // max(copies[0].size, 1))
    results: list[tuple[Array, ...]] = []
    for start in range(0, len(copies), per_chunk):
        chunk = np.stack(copies[start : start + per_chunk])
        chunk = chunk.reshape(len(chunk), *lead, *copies[0].shape)
        args = list(wide)
        args[position] = chunk
        if rules.looped:
            out = _batch.loop(rules.forward, rules.signature, rules.name, args, config)
        else:
            out = rules.forward(*args, **config)
        outs = tuple(np.asarray(o) for o in _as_tuple(out))
        results.extend(tuple(o[k] for o in outs) for k in range(len(chunk)))
    return results


def _gradient_shape(
    derivatives: list[tuple[Array, ...]], x: Array, core: int, rules: Rules
) -> tuple[int, ...]:
    """The gradient's shape: the broadcast batch of outputs and input, then the input's core."""
    batches = [x.shape[: x.ndim - core]]
    if rules.signature is not None and derivatives:
        for k, d in enumerate(derivatives[0]):
            batches.append(np.shape(d)[: np.ndim(d) - len(rules.signature.outputs[k])])
    shape: tuple[int, ...] = tuple(np.broadcast_shapes(*batches)) + x.shape[x.ndim - core :]
    return shape


def _contract(grads: Sequence[Any], derivative: tuple[Array, ...], rules: Rules) -> Any:
    """Sum Re(conj(g) * d) over each output's core dims (every dim without a signature)."""
    total: Any = 0.0
    for k, (g, d) in enumerate(zip(grads, derivative, strict=True)):
        if not np.issubdtype(np.asarray(d).dtype, np.inexact):
            continue  # an integer or bool output has no derivative
        core = np.ndim(d) if rules.signature is None else len(rules.signature.outputs[k])
        product = np.real(np.conj(g) * d)
        axes = tuple(range(np.ndim(product) - core, np.ndim(product)))
        total = total + (product.sum(axis=axes) if axes else product)
    return total


def _refuse_complex(rules: Rules, values: Sequence[Any]) -> None:
    if any(np.iscomplexobj(v) for v in values):
        raise InputError(
            f'npgrad op "{rules.name}": the complex-step gradient needs real inputs and '
            f"tangents, but got complex ones; register numerical_gradient(method='central') "
            f"for complex inputs"
        )


def _as_tuple(outputs: Any) -> tuple[Any, ...]:
    return outputs if isinstance(outputs, tuple) else (outputs,)


def estimate_error(
    rules: Rules,
    choice: Numerical,
    inputs: Sequence[Any],
    config: dict[str, Any],
    needs: Sequence[bool],
) -> float:
    """Estimate the relative error of the numerical gradient on ``inputs``.

    The gradient of the sum of the outputs with the method's step and with twice that step:
    their difference, over the difference the error law predicts, bounds the error (Richardson).
    For the complex step, whose error is rounding alone, the two agree to rounding.
    """
    outputs = _as_tuple(_evaluate_plain(rules, inputs, config))
    grads = [np.ones(np.shape(o)) for o in outputs]
    h = choice.relative_step()
    one = gradients(rules, choice, grads, inputs, config, needs, step=h)
    two = gradients(rules, choice, grads, inputs, config, needs, step=2 * h)
    order = {"forward": 1, "central": 2, "complex-step": 2}[choice.method]
    worst = 0.0
    for a, b in zip(one, two, strict=True):
        if a is None:
            continue
        scale = max(float(np.max(np.abs(a), initial=0.0)), 1e-300)
        difference = float(np.max(np.abs(np.asarray(a) - np.asarray(b)), initial=0.0))
        worst = max(worst, difference / (2**order - 1) / scale)
    return max(worst, NOMINAL_ERROR["complex-step"] if choice.method == "complex-step" else 0.0)
