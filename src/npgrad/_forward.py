"""One run of an op's forward: tensors to arrays, the user's function, arrays back to tensors.

Every path of a call (plain, inside the autograd.Function, inside a custom-op kernel, under the
vmap rule) runs the forward here, so that the conversions and checks cannot drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from npgrad import _batch
from npgrad._convert import (
    array_problem,
    as_array,
    differentiable,
    to_numpy,
    to_numpy_all,
    to_tensor,
)
from npgrad._rules import Rules
from npgrad.errors import InputError, NonFiniteError, OutputError

_anomaly_enabled = torch.is_anomaly_enabled
Array = np.ndarray[Any, Any]


class Call:
    """What one call carries from its forward to its backward; never tensors."""

    __slots__ = (
        "arrays",
        "config",
        "constants",
        "count",
        "device",
        "dtype",
        "output_meta",
        "residuals",
        "rules",
        "single",
        "slots",
    )

    def __init__(
        self,
        rules: Rules,
        config: dict[str, Any],
        dtype: torch.dtype,
        device: torch.device | None,
        count: int,
        slots: Sequence[int] | None = None,
        constants: list[Any] | None = None,
    ) -> None:
        # The rules of the op as they were at the call: a registration in between changes
        # nothing for this call's backward.
        self.rules = rules
        self.count = count
        self.config = config
        self.dtype = dtype
        # None on the CPU, where results need no move.
        self.device = device
        # Positions of the tensor inputs, and the other inputs by position (None where a tensor
        # goes); both None when every positional input is a tensor, the common fast case.
        self.slots = slots
        self.constants = constants
        self.single = True
        # What the user's forward received, kept for the backward: converting the saved tensors
        # again would cost as much as the conversion itself. Dies with the autograd context.
        self.arrays: Sequence[Any] = ()
        # What @op.save returned beside the outputs: a dict, or an object array of dicts (one
        # per batch element) for an op looped over its signature's batch dims. None without.
        self.residuals: Any = None
        # (shape, dtype, device) of each output, for the zero gradients torch leaves out and
        # for checking tangents; kept by the transformable Function only.
        self.output_meta: tuple[tuple[tuple[int, ...], torch.dtype, torch.device], ...] = ()


def run_forward(state: Call, args: Sequence[Any], keep: bool = False) -> Any:
    """Convert the tensor inputs, run the user's forward, convert its result back.

    With ``keep`` (a backward or jvp may follow), an op with ``@op.save`` runs that instead and
    its residuals are kept in ``state``.
    """
    rules = state.rules
    try:
        if state.slots is None:
            arrays = to_numpy_all(args)
        else:
            arrays = list(state.constants)  # type: ignore[arg-type]
            for i in state.slots:
                arrays[i] = to_numpy(args[i])
    except (TypeError, NotImplementedError) as error:
        # No memory NumPy can read: meta tensors (shapes only), or a dtype NumPy lacks.
        return _unreadable(state, args, error)
    state.arrays = arrays
    saving = keep and rules.save is not None
    fn = rules.save if saving else rules.forward
    signature = rules.signature
    expected = None
    batch = None
    try:
        if signature is not None:
            shapes = tuple([a.shape if isinstance(a, np.ndarray) else None for a in arrays])
            batch, expected = signature.bind_outputs(rules.name, shapes)
        if rules.looped:
            result = _batch.loop(
                fn,  # type: ignore[arg-type]
                signature,  # type: ignore[arg-type]
                rules.name,
                arrays,
                state.config,
                batch=batch,
                residuals=saving,
            )
        else:
            result = fn(*arrays, **state.config)  # type: ignore[misc]
        if saving:
            result, state.residuals = split_saved(rules, result)
    except Exception as error:
        if rules.parent is None:  # a companion's rule adds its own note
            add_note(error, rules, "save" if saving else "forward")
        raise
    if expected is not None:
        _check_signature_shapes(rules, expected, result)
    return finish(state, result)


def finish(state: Call, result: Any) -> Any:
    """Return the forward's ``result`` as tensors: checked, cast, on the call's device."""
    rules = state.rules
    if isinstance(result, tuple):
        state.single = False
        outputs = tuple(
            _output(rules, k, value, state) for k, value in enumerate(_unaliased(result))
        )
        if _anomaly_enabled():
            for k, output in enumerate(outputs):
                check_finite(rules, output, f"output {k} of the forward")
        return outputs
    output = _output(rules, 0, result, state)
    if _anomaly_enabled():
        check_finite(rules, output, "output 0 of the forward")
    return output


def _unreadable(state: Call, args: Sequence[Any], error: Exception) -> Any:
    """Meta results for meta inputs, from the op's shape rule; else an error naming the input."""
    rules = state.rules
    tensors = [(i, a) for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    if any(a.is_meta for _, a in tensors):
        shapes = [tuple(a.shape) if isinstance(a, torch.Tensor) else None for a in args]
        found = rules.output_shapes(shapes, state.config)
        if found is None:
            raise InputError(
                f'npgrad op "{rules.name}": got meta tensors, which hold shapes but no values, '
                f"and the op cannot say its output shapes without running; give it a signature "
                f"naming every output dim or an @{rules.variable}.shape rule, or call it on real "
                f"tensors"
            ) from None
        # Meta results take the promoted floating dtype, as a shape rule gives no dtype.
        outputs = tuple(torch.empty(shape, dtype=state.dtype, device="meta") for shape in found)
        single = len(found) == 1
        if rules.shape is not None:
            single = rules.shape_rule(shapes, state.config)[1]
        state.single = single
        return outputs[0] if single else outputs
    for i, tensor in tensors:
        if tensor.layout == torch.strided and (
            tensor.is_quantized or (tensor.dtype.itemsize == 1 and tensor.is_floating_point())
        ):
            fix = ".dequantize()" if tensor.is_quantized else ".to(torch.float32)"
            raise InputError(
                f'npgrad op "{rules.name}": positional input "{rules.input_name(i)}" (position '
                f"{i}) has dtype {tensor.dtype}, which NumPy has no type for; expected a bool, "
                f"integer or (16, 32 or 64-bit) floating tensor; convert it with {fix} first"
            ) from None
    raise error


def split_saved(rules: Rules, saved: Any) -> tuple[Any, Any]:
    """Return the outputs and residuals of what ``@op.save`` returned, checking its form."""
    if isinstance(saved, tuple) and len(saved) == 2:
        outputs, residuals = saved
        if isinstance(residuals, dict) or (
            isinstance(residuals, np.ndarray) and residuals.dtype == object
        ):
            return outputs, residuals
    got = f"a tuple of {len(saved)}" if isinstance(saved, tuple) else f"a {type(saved).__name__}"
    raise OutputError(
        f'npgrad op "{rules.name}": @{rules.variable}.save returned {got}; expected '
        f"(outputs, residuals) with residuals a dict of names to values; return "
        f"`result, {{'name': value}}`"
    )


def _check_signature_shapes(rules: Rules, expected: list[tuple[int, ...]], result: Any) -> None:
    assert rules.signature is not None
    outputs = result if isinstance(result, tuple) else (result,)
    for k, (value, shape) in enumerate(zip(outputs, expected, strict=False)):
        # np.shape dispatches through __array_function__: a microsecond an output.
        got = value.shape if type(value) is np.ndarray else np.shape(value)
        if got != shape:
            owner, what = _owner(rules)
            raise OutputError(
                f'npgrad op "{owner.name}": {what} returned shape {got} at output {k}, but the '
                f'signature "{rules.signature.text}" makes it {shape}; return core dims as the '
                f"signature names them, or fix the signature"
            )


def check_finite(rules: Rules, tensor: torch.Tensor | None, what: str) -> None:
    """Under torch's anomaly mode, refuse NaN and Inf where an op produced them.

    Only real values are checked: fake tensors (a trace, which AOTAutograd runs in anomaly
    mode) and batched ones have none to read.
    """
    if type(tensor) is not torch.Tensor or not differentiable(tensor.dtype):
        return
    finite = torch.isfinite(tensor)
    try:
        all_finite = bool(finite.all())
    except RuntimeError:  # a batched tensor (vmap, batched gradients): no single answer
        return
    if not all_finite:
        bad = int((~finite).sum())
        raise NonFiniteError(
            f'npgrad op "{rules.name}": {what} has {bad} NaN or Inf value(s) of '
            f"{tensor.numel()} (found by torch.autograd.set_detect_anomaly); expected finite "
            f"values; check the op's domain and its inputs"
        )


def _unaliased(results: tuple[Any, ...]) -> tuple[Any, ...]:
    """Return the forward's results with any that share memory with an earlier one copied.

    torch takes each writable array as it is, so a forward returning one array twice would
    give two outputs where writing into one changes the other.
    """
    seen: list[Array] = []
    unaliased = []
    for value in results:
        if type(value) is np.ndarray:
            if any(np.may_share_memory(value, other) for other in seen):
                value = value.copy()
            seen.append(value)
        unaliased.append(value)
    return tuple(unaliased)


def _output(rules: Rules, index: int, value: Any, state: Call) -> torch.Tensor:
    if type(value) is np.ndarray and value.dtype.kind == "f" and value.dtype.itemsize <= 8:
        return to_tensor(value, state.dtype, state.device)
    value = as_array(value)
    problem = array_problem(value)
    if problem is not None:
        fix = {
            "a NoneType": "return the result; a forward must return an ndarray or a tuple of them",
            "a list": "return a tuple of ndarrays for several outputs, or np.asarray(...) for one",
        }.get(
            problem,
            "cast it with .astype(np.float64) (np.complex128 if complex)"
            if "long double" in problem
            else "return bool, integer, floating or complex ndarrays",
        )
        owner, what = _owner(rules)
        raise OutputError(
            f'npgrad op "{owner.name}": {what} returned {problem} at output {index}, expected '
            f"an ndarray of a numeric dtype; {fix}"
        )
    assert isinstance(value, np.ndarray)
    kind = value.dtype.kind
    # state.dtype is the real dtype of the promotion: complex results take its complex twin.
    dtype = state.dtype if kind == "f" else state.dtype.to_complex() if kind == "c" else None
    return to_tensor(value, dtype, state.device)


def _owner(rules: Rules) -> tuple[Rules, str]:
    """The op a user knows, and which of its functions ran: a companion's is its parent's."""
    if rules.parent is not None:
        return rules.parent, rules.kind
    return rules, "forward"


def add_note(error: BaseException, rules: Rules, where: str) -> None:
    """Add a note naming the op (and where in it) to an exception raised by the user's code."""
    owner = rules.parent or rules
    note = f'raised in the {where} of npgrad op "{owner.name}" defined at {owner.defined_at}'
    if isinstance(error, ValueError) and "read-only" in str(error):
        note += (
            "; npgrad passes arrays as read-only views of the caller's tensors, so a function "
            "cannot corrupt them: copy first (a = a.copy()) to write in place"
        )
    if hasattr(error, "add_note"):
        error.add_note(note)


def residuals_of(rules: Rules, arrays: Sequence[Any], config: dict[str, Any]) -> Any:
    """Run ``@op.save`` on ``arrays`` again and return its residuals (the outputs are dropped).

    For a trace, which cannot carry residuals that are not tensors, from forward to backward.
    """
    assert rules.save is not None
    try:
        if rules.looped:
            assert rules.signature is not None
            saved = _batch.loop(
                rules.save, rules.signature, rules.name, arrays, config, residuals=True
            )
        else:
            saved = rules.save(*arrays, **config)
        return split_saved(rules, saved)[1]
    except Exception as error:
        add_note(error, rules, "save")
        raise
