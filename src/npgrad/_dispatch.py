"""One call of an op: sort the inputs, then take the one path that fits.

- traced tensors (``torch.compile``, ``torch.export``, fake tensors): the torch.library op;
- torch.func transforms or forward-mode AD: the vmap rule directly when vmap is innermost,
  else the transformable Function;
- inputs needing gradients: the eager Function;
- otherwise: the forward alone, with no graph;
- torch's legacy batched tensors (batched gradients flowing backwards): the vmap rule.

`Core` is an op as every layer below `npgrad.Op` sees it: its rules and what is built from them.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from npgrad import _library, _vmap
from npgrad import _torch_internals as internals
from npgrad._convert import array_problem, floating_result_dtype, to_tensor
from npgrad._forward import Call, run_forward
from npgrad._function import build
from npgrad._rules import Rules
from npgrad.errors import InputError

# Bound once: Dynamo recognises the function itself and folds the call to True while tracing.
_is_compiling = torch.compiler.is_compiling
_is_tracing = internals.is_tracing
_special_mode_active = internals.special_mode_active
_Tensor = torch.Tensor
_Parameter = torch.nn.Parameter
_PLAIN_TENSORS = (_Tensor, _Parameter)
# Positional inputs passed through as they are: numbers, and None for an absent optional input.
_NUMBERS = (bool, int, float, complex, np.bool_, np.integer, np.floating, np.complexfloating)
_CONSTANTS = (*_NUMBERS, type(None))


class Core:
    """An op's runtime: its rules, its two autograd.Functions, its companions, its custom op."""

    def __init__(self, rules: Rules) -> None:
        self._rules = rules
        self._eager, self._function = build(self)
        self._apply = internals.apply_without_binding(self._eager)
        # The ops that run this op's NumPy backward and jvp (see _companions), by kind.
        self._companions: dict[str, Core] = {}
        self._library_problem = _register_library(self)
        self._outside_graph = _library.outside_graph(rules, self._library_problem)

    def __call__(self, *inputs: Any, **config: Any) -> Any:
        if config and self._rules.kind == "op":
            inputs, config = bind(self._rules, inputs, config)
        if _is_compiling() or _is_tracing():
            # torch.jit.trace records the custom op, which runs NumPy again on new inputs;
            # the eager path would leave its result in the trace as a constant.
            return _library.call(self, inputs, config)
        return call(self, inputs, config)

    def _forward_only(self, inputs: tuple[Any, ...], config: dict[str, Any]) -> Any:
        """Run the forward alone, recording nothing: a custom op's kernel, below autograd."""
        if config and self._rules.kind == "op":
            inputs, config = bind(self._rules, inputs, config)
        if _special_mode_active():
            # Under a transform the call could still apply a Function: grad mode off, as the
            # dispatcher means it below autograd.
            with torch.no_grad():
                return call(self, inputs, config, graph=False)
        return call(self, inputs, config, graph=False)


def bind(
    rules: Rules, inputs: tuple[Any, ...], config: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Return the call's positional inputs and keyword config, bound as Python binds them.

    A positional-or-keyword parameter of the forward may be given by name; keyword-only ones
    are config, which must not be a tensor (config is static: it gets no gradient).
    """
    if not config.keys() <= rules.config_names:
        try:
            bound = inspect.signature(rules.forward).bind(*inputs, **config)
        except TypeError as error:
            raise InputError(
                f'npgrad op "{rules.name}": {error}; expected the positional inputs '
                f"({_listed(rules.input_names)}), in order or by name, and keyword config "
                f"({_listed(sorted(rules.config_names))})"
            ) from None
        inputs, config = _split(rules, bound)
    for key, value in config.items():
        if isinstance(value, torch.Tensor):
            raise InputError(
                f'npgrad op "{rules.name}": keyword config "{key}" was given a tensor; config '
                f"is static and gets no gradient, so expected a number, string, tuple or array; "
                f"make it a positional input of the forward (before any *) to pass a tensor, "
                f"with a gradient if the backward gives one, or pass {key}=t.item() / "
                f"t.numpy() for a constant"
            )
    return inputs, config


def _split(rules: Rules, bound: inspect.BoundArguments) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Return the positional inputs (defaults filled up to the last one given) and config."""
    given = bound.arguments
    parameters = bound.signature.parameters
    named = [n for n in rules.input_names if n in given]
    last = rules.input_names.index(named[-1]) if named else -1
    inputs = [
        given[n] if n in given else parameters[n].default for n in rules.input_names[: last + 1]
    ]
    if rules.varargs_name is not None:
        inputs.extend(given.get(rules.varargs_name, ()))
    config = {k: v for k, v in given.items() if k in rules.config_names}
    for parameter in parameters.values():
        if parameter.kind is parameter.VAR_KEYWORD:
            config.update(given.get(parameter.name, {}))
    return tuple(inputs), config


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names) or "none"


def _register_library(core: Core) -> str | None:
    """Register ``core`` with torch.library; return why it is not traceable, or None."""
    try:
        return _library.register(core)
    except Exception as error:  # a name or type torch.library refuses: eager still works
        return f"torch.library refused it ({type(error).__name__}: {error})"


def call(core: Core, inputs: tuple[Any, ...], config: dict[str, Any], graph: bool = True) -> Any:
    """Run ``core`` on ``inputs``: through its Function when a graph is needed, else directly.

    With ``graph`` False the forward runs alone, whatever the inputs need.
    """
    rules = core._rules
    if len(inputs) != rules.arity and rules.varargs_name is None:
        missing = len(rules.input_names) - len(inputs)
        if 0 < missing <= len(rules.input_defaults):
            return call(core, inputs + rules.input_defaults[-missing:], config, graph)
        fix = (
            "give the missing ones, in order or by name"
            if missing > 0
            else "pass config as keywords"
        )
        raise InputError(
            f'npgrad op "{rules.name}": called with {len(inputs)} positional inputs, expected '
            f"{len(rules.input_names)} ({', '.join(rules.input_names)}); {fix}"
        )
    # The fast case, checked with as little as possible: every input a CPU tensor, all of one
    # floating dtype. Off the CPU, one device must be checked (a torch.device per tensor and a
    # comparison, more than the CPU flag costs): the general path does it.
    needs_graph = False
    dtype = None
    for value in inputs:
        kind = type(value)
        if (kind is not _Tensor and kind is not _Parameter) or not value.is_cpu:
            return _call_general(core, inputs, config, graph)
        if dtype is None:
            dtype = value.dtype
        elif value.dtype is not dtype:
            return _call_general(core, inputs, config, graph)
        if value.requires_grad:
            needs_graph = graph
    if dtype is None or not dtype.is_floating_point:
        if dtype is None or not dtype.is_complex:
            return _call_general(core, inputs, config, graph)
        dtype = dtype.to_real()  # a Call holds the real dtype; complex results take its twin
    state = Call(rules, config, dtype, None, len(inputs))
    if needs_graph and not _special_mode_active() and torch.is_grad_enabled():
        return core._apply(state, *inputs)  # the common case, without _route's checks
    return _route(core, state, inputs, needs_graph)


def _route(core: Core, state: Call, args: Sequence[Any], needs_graph: bool) -> Any:
    try:
        if _special_mode_active():
            vmap = internals.innermost_vmap()
            if vmap is not None:
                return _vmap.innermost(core, state, args, *vmap)
            return core._function.apply(state, *args)  # type: ignore[no-untyped-call]
        if needs_graph and torch.is_grad_enabled():
            return core._apply(state, *args)
        return run_forward(state, args)
    except RuntimeError as error:
        # Tensors NumPy cannot read fail at the conversion, before any of the op's code runs:
        # legacy batched ones (batched gradients) are unwrapped and the call made again; fake
        # or functional ones mean a trace (AOTAutograd, export, opcheck): the custom op.
        if _vmap.has_legacy_batched(args):
            return _vmap.legacy(core, args, state.config)
        if any(isinstance(a, torch.Tensor) and type(a) not in _PLAIN_TENSORS for a in args):
            return _library.call(core, tuple(args), state.config)
        if not internals.ENABLED and "Batching rule" in str(error):
            raise _legacy_unsupported(state.rules) from error
        raise


def _call_general(
    core: Core, inputs: tuple[Any, ...], config: dict[str, Any], graph: bool = True
) -> Any:
    rules = core._rules
    args = list(inputs)
    constants = list(inputs)
    slots = []
    tensors = []
    needs_graph = False
    for i, value in enumerate(inputs):
        if isinstance(value, torch.Tensor):
            tensor = value
        elif isinstance(value, np.ndarray) and array_problem(value) is None:
            tensor = to_tensor(value, None, None)
            args[i] = tensor
        elif isinstance(value, _CONSTANTS) or (
            isinstance(value, (tuple, list)) and all(isinstance(v, _NUMBERS) for v in value)
        ):
            continue
        else:
            raise _input_error(rules, i, value)
        if tensor.requires_grad:
            needs_graph = True
        constants[i] = None
        slots.append(i)
        tensors.append(tensor)
    device = _common_device(rules, tensors)
    # An order or a sigma is a parameter, not data: it does not promote the result.
    data = [t for i, t in zip(slots, tensors, strict=True) if i not in rules.nondifferentiable]
    state = Call(
        rules,
        config,
        floating_result_dtype(data or tensors).to_real(),
        None if device.type == "cpu" else device,
        len(inputs),
        slots,
        constants,
    )
    return _route(core, state, args, needs_graph and graph)


def _common_device(rules: Rules, tensors: list[torch.Tensor]) -> torch.device:
    if not tensors:
        return torch.device("cpu")
    # As in torch, 0-dim CPU tensors (scalars) may join tensors on any device.
    placed = [t for t in tensors if not (t.dim() == 0 and t.device.type == "cpu")]
    devices = {t.device for t in placed}
    if len(devices) <= 1:
        return placed[0].device if placed else tensors[0].device
    found = ", ".join(str(t.device) for t in tensors)
    raise InputError(
        f'npgrad op "{rules.name}": inputs are on different devices ({found}); expected one '
        f"device (0-dim CPU tensors may join any); move them with .to(device) first"
    )


def _input_error(rules: Rules, position: int, value: Any) -> InputError:
    name = rules.input_name(position)
    got = array_problem(value) or type(value).__name__
    fix = (
        "cast it with .astype(np.float64)"
        if "long double" in got
        else "pass static config as a keyword argument"
    )
    return InputError(
        f'npgrad op "{rules.name}": positional input "{name}" (position {position}) is {got}; '
        f"expected a tensor, ndarray, number, tuple of numbers or None; {fix}"
    )


def _legacy_unsupported(rules: Rules) -> InputError:
    owner = rules.parent or rules
    return InputError(
        f'npgrad op "{owner.name}": met torch\'s legacy batched tensors (from '
        f"autograd.grad(is_grads_batched=True), jacobian(vectorize=True) in either strategy, or "
        f"gradcheck's batched checks), which only torch's internals can read, and "
        f"NPGRAD_TORCH_INTERNALS=0 turned those off; unset it, or compute the gradients one "
        f"batch element at a time"
    )
