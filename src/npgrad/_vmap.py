"""The vmap rule of every op and companion, and the three ways torch reaches it.

NumPy cannot see a batched tensor, so a batched call unwraps its inputs and calls the op once
more on the whole batch: with a signature, one call with the vmapped dim in front of the batch
dims; without one, a loop over the vmapped dim. torch reaches the rule through the Function's
vmap staticmethod (``torch.func.vmap``), directly when vmap is the innermost transform (faster
than torch's generic handling), and through torch's legacy batched tensors, which torch's own
batched gradients pass through backwards (``autograd.grad(is_grads_batched=True)``,
``jacobian(vectorize=True)``, ``gradcheck(check_batched_grad=True)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from npgrad import _torch_internals as internals
from npgrad._forward import Call, run_forward
from npgrad._rules import Runtime


def rule(
    core: Runtime,
    config: dict[str, Any],
    size: int,
    dims: Sequence[int | None],
    args: Sequence[Any],
) -> tuple[Any, Any]:
    """Return the op's outputs for a batch of ``size`` along ``dims``, and their batch dims."""
    if all(d is None for d in dims):
        out = core(*args, **config)
        return out, (None,) * len(out) if isinstance(out, tuple) else None
    signature = core._rules.signature
    if signature is None:
        results = [
            core(
                *(a if d is None else a.select(d, i) for a, d in zip(args, dims, strict=True)),
                **config,
            )
            for i in range(size)
        ]
        if isinstance(results[0], tuple):
            stacked = tuple(torch.stack(parts) for parts in zip(*results, strict=True))
            return stacked, (0,) * len(stacked)
        return torch.stack(results), 0
    # Batch dims lead the core dims; the vmapped dim goes in front of all of them, and inputs
    # without it get size-1 dims there, so that NumPy-style broadcasting lines them up.
    cores = [len(core_dims) for core_dims in signature.inputs]
    ranks = [
        a.dim() - n - (d is not None) if isinstance(a, torch.Tensor) else 0
        for a, d, n in zip(args, dims, cores, strict=True)
    ]
    lead = max(ranks)
    aligned = []
    for a, d, rank in zip(args, dims, ranks, strict=True):
        if not isinstance(a, torch.Tensor):
            aligned.append(a)
            continue
        moved = a if d is None else a.movedim(d, 0)
        batched = moved.shape[:1] if d is not None else (1,)
        rest = moved.shape[1:] if d is not None else moved.shape
        aligned.append(moved.reshape(*batched, *([1] * (lead - rank)), *rest))
    out = core(*aligned, **config)
    return out, (0,) * len(out) if isinstance(out, tuple) else 0


def innermost(core: Runtime, state: Call, args: Sequence[Any], level: int, size: int) -> Any:
    """Apply the vmap rule directly, as torch's handling of an autograd.Function would.

    Unwrap the batched tensors, run the rule one level down, rewrap: without torch's generic
    machinery, which costs more than a small op.
    """
    values, dims = [], []
    # In place: every input a tensor batched in front with as many batch dims as the others,
    # none needing a gradient. Then the whole batch is one plain forward, dispatched once: the
    # common case, checked within the unwrapping loop because a vmapped small op is paid for
    # by the microsecond.
    signature = state.rules.signature
    in_place = signature is not None and state.slots is None
    ranks = set()
    for k, value in enumerate(args):
        value, dim = internals.unwrap_batched(value, level)
        if dim is None:
            in_place = False
        elif in_place:
            ranks.add(value.dim() - len(signature.inputs[k]))  # type: ignore[union-attr]
            in_place = dim == 0 and not value.requires_grad
        values.append(value)
        dims.append(dim)
    with internals.below_vmap():
        if in_place and len(ranks) == 1 and not internals.transforms_active():
            out = run_forward(state, values)
            out_dims: Any = (0,) * len(out) if isinstance(out, tuple) else 0
        else:
            out, out_dims = rule(core, state.config, size, dims, values)
    return _rewrapped(out, out_dims, lambda o, d: internals.add_batch_dim(o, d, level))


def legacy(core: Runtime, inputs: Sequence[Any], config: dict[str, Any]) -> Any:
    """Call the op on torch's legacy batched tensors: unwrap, apply the rule, rewrap."""
    level = internals.legacy_level()
    values, dims, size = internals.unwrap_legacy(inputs, level)
    with internals.below_legacy_vmap():
        out, out_dims = rule(core, config, size, dims, values)
    return _rewrapped(out, out_dims, lambda o, d: internals.add_legacy_batch_dim(o, d, level))


def _rewrapped(out: Any, out_dims: Any, wrap: Callable[[Any, int | None], Any]) -> Any:
    if isinstance(out, tuple):
        return tuple(wrap(o, d) for o, d in zip(out, out_dims, strict=True))
    return wrap(out, out_dims)


def has_legacy_batched(values: Sequence[Any]) -> bool:
    """Whether any of ``values`` is one of torch's legacy batched tensors."""
    return any(isinstance(v, torch.Tensor) and internals.is_legacy_batched(v) for v in values)
