"""Every use of torch's private internals, each beside the public-API fallback it replaces.

npgrad reaches below torch's public API in three places, each for speed or for a case the public
API cannot express:

- Mode checks: whether torch.func transforms or forward-mode AD are active, read from torch's C++
  state (tens of nanoseconds). Fallback: assume they may be, so every call goes through
  ``autograd.Function.apply``, which handles both itself (slower eager calls); a backward takes
  the NumPy fast path only when its gradients convert to arrays and nothing records its result.
- Function application: on torch before 2.14, ``Function.apply`` is a Python wrapper around the
  C++ ``apply``; npgrad's eager Function needs none of the wrapper's work. Fallback:
  ``Function.apply``.
- Batched tensors: the vmap rule applied directly (unwrap, one batched call, rewrap) instead of
  through torch's generic handling of an autograd.Function, and torch's legacy batched tensors,
  which ``autograd.grad(is_grads_batched=True)``, ``jacobian(vectorize=True)`` and
  ``gradcheck(check_batched_grad=True)`` pass through backwards. Fallback: the Function's vmap
  staticmethod through ``Function.apply``; for legacy batched tensors, an `InputError` naming
  the op (the public API has no way to read them).

``NPGRAD_TORCH_INTERNALS=0`` in the environment forces every fallback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

ENABLED = os.environ.get("NPGRAD_TORCH_INTERNALS", "1").strip().lower() not in ("0", "false", "no")


def _always() -> bool:
    return True


def _never(_: Any) -> bool:
    return False


def _never_active() -> bool:
    return False


if ENABLED:
    from torch.autograd import forward_ad

    _functorch = torch._C._functorch
    _transforms_active = torch._C._are_functorch_transforms_active
    _VMAP = _functorch.TransformType.Vmap
    _FunctionBase = torch._C._FunctionBase

    def special_mode_active() -> bool:
        """Whether torch.func transforms or forward-mode AD (dual tensors) are active."""
        return _transforms_active() or forward_ad._current_level >= 0

    # Whether torch.func transforms are active.
    transforms_active: Callable[[], bool] = _transforms_active

    is_legacy_batched: Callable[[Any], bool] = _functorch.is_legacy_batchedtensor

    # Whether torch.jit.trace is tracing: torch.jit.is_tracing without its scripting check,
    # a third of its cost on every call.
    is_tracing: Callable[[], bool] = torch._C._is_tracing

else:
    special_mode_active = _always
    transforms_active = _never_active
    is_legacy_batched = _never
    is_tracing = torch.jit.is_tracing  # type: ignore[attr-defined]


def apply_without_binding(function: type[torch.autograd.Function]) -> Callable[..., Any]:
    """Return the C++ ``apply`` of ``function``, which must define no ``setup_context``.

    Before torch 2.14, ``Function.apply`` is Python: it checks for transforms and for a
    ``setup_context`` (about 1.5 us), then calls this. From 2.14 it is this. Outside transforms
    it also replaces dead wrappers (see `unwrap_dead`): npgrad does that where they arise.
    """
    if ENABLED:
        return _FunctionBase.__dict__["apply"].__get__(None, function)  # type: ignore[no-any-return]
    return function.apply


def unwrap_dead(tensors: Sequence[Any]) -> list[Any]:
    """Return ``tensors`` with each dead wrapper replaced by the tensor it wraps.

    A dead wrapper is a tensor of a torch.func transform that has ended: the saved tensors of a
    ``torch.func.vjp`` pullback called after ``vjp`` returned. Ops applied on it would attach
    to the wrapper, not to the input, and a derivative through them would be lost. Without
    the internals, ``Function.apply`` (which every call then takes) does this itself.
    """
    if not ENABLED:
        return list(tensors)
    unwrap = _functorch.unwrap_if_dead
    return [unwrap(t) if isinstance(t, torch.Tensor) else t for t in tensors]


def innermost_vmap() -> tuple[int, int] | None:
    """Return the (level, batch size) of the innermost transform if it is a vmap, else None.

    None also under forward-mode AD, and always with the internals off.
    """
    if not ENABLED or forward_ad._current_level >= 0:
        return None
    interpreter = _functorch.peek_interpreter_stack()
    if interpreter is None or interpreter.key() != _VMAP:
        return None
    return interpreter.level(), _functorch.CVmapInterpreterPtr(interpreter).batchSize()


def unwrap_batched(value: Any, level: int) -> tuple[Any, int | None]:
    """Return a tensor batched at ``level`` as its plain value and batch dim; others as they are."""
    if isinstance(value, torch.Tensor) and _functorch.maybe_get_level(value) == level:
        unwrapped, dim = _functorch._unwrap_batched(value, level)
        return unwrapped, dim
    return value, None


def add_batch_dim(value: torch.Tensor, dim: int | None, level: int) -> torch.Tensor:
    """Return ``value`` batched along ``dim`` at ``level`` (as it is when ``dim`` is None)."""
    return value if dim is None else _functorch._add_batch_dim(value, dim, level)


@contextmanager
def below_vmap() -> Iterator[None]:
    """Run the block one transform level down, as a vmap interpreter's ``lower()`` does."""
    layer = _functorch.pop_dynamic_layer_stack()
    try:
        yield
    finally:
        _functorch.push_dynamic_layer_stack(layer)


@contextmanager
def jvp_rule_scope(
    tensors: Sequence[Any], tangents: Sequence[Any]
) -> Iterator[tuple[list[Any], list[Any]] | None]:
    """Give a jvp rule its tensors without their own tangents, and forward mode back.

    Inside a Function's jvp rule, the saved tensors still carry the tangents of the level the
    rule computes, hidden only while forward mode is off; and forward mode is off for every
    level, so an outer level (``jacfwd(jacfwd(f))``) would see the rule's result as a constant:
    a silent zero. Yields the tensors and tangents with the rule's level stripped, while forward
    mode is on again for the levels outside it; yields None where that cannot be done (no
    internals), and the rule must not compute with ops then.
    """
    if not ENABLED:
        yield None
        return
    levels = [_functorch.maybe_get_level(t) for t in tangents if isinstance(t, torch.Tensor)]
    level = max(levels, default=-1)

    def strip(value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        if level >= 0:
            return _functorch._unwrap_for_grad(value, level)
        if is_legacy_batched(value) or value.layout != torch.strided:
            return value  # batched forward gradients (a tangent, no dual), or sparse
        return forward_ad.unpack_dual(value).primal  # type: ignore[no-untyped-call]

    with forward_ad._set_fwd_grad_enabled(True):
        yield [strip(t) for t in tensors], [strip(t) for t in tangents]


def legacy_level() -> int:
    """Return the nesting level of torch's legacy vmap (``torch._vmap_internals``)."""
    level: int = torch._C._vmapmode_increment_nesting()
    torch._C._vmapmode_decrement_nesting()
    return level - 1


def unwrap_legacy(values: Sequence[Any], level: int) -> tuple[list[Any], list[int | None], int]:
    """Return legacy batched tensors as plain tensors batched in front, their dims, batch size.

    A tensor batched only at an outer level comes back with a size-1 front dim, which is taken
    as not batched here (its values are the same for every batch element).
    """
    plain: list[Any] = []
    dims: list[int | None] = []
    size = 1
    for value in values:
        if isinstance(value, torch.Tensor) and is_legacy_batched(value):
            unwrapped = torch._remove_batch_dim(value, level, 1, 0)
            if unwrapped.shape[0] == 1:
                plain.append(unwrapped.squeeze(0))
                dims.append(None)
            else:
                size = unwrapped.shape[0]
                plain.append(unwrapped)
                dims.append(0)
        else:
            plain.append(value)
            dims.append(None)
    return plain, dims, size


def add_legacy_batch_dim(value: torch.Tensor, dim: int | None, level: int) -> torch.Tensor:
    """Return ``value`` as a legacy batched tensor along ``dim`` (as it is when None)."""
    return value if dim is None else torch._add_batch_dim(value, dim, level)


@contextmanager
def below_legacy_vmap() -> Iterator[None]:
    """Run the block one legacy vmap level down, so that outer levels are found next."""
    torch._C._vmapmode_decrement_nesting()
    try:
        yield
    finally:
        torch._C._vmapmode_increment_nesting()
