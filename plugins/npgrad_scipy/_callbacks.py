"""What the ops that call a user's torch function share: its arguments, and a check of them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.autograd import forward_ad

from npgrad.errors import InputError


def as_tensors(params: tuple[Any, ...]) -> list[Any]:
    """Return the parameters as tensors, floating ones in float64.

    Copies: the arrays npgrad passes are read-only. Other values pass through.
    """
    result = []
    for p in params:
        if isinstance(p, np.ndarray):
            wide = {"f": torch.float64, "c": torch.complex128}.get(p.dtype.kind)
            p = torch.from_numpy(np.array(p)) if wide is None else torch.tensor(p, dtype=wide)
        result.append(p)
    return result


def refuse_captured(name: str, fun: Callable[..., Any], *args: Any) -> None:
    """Refuse a ``fun`` that reads tensors needing a derivative other than its arguments.

    Their derivative would silently be missing: the op sees only the tensors it is given.
    Called where the user called the solver, so that tensors of a torch.func transform or a
    forward-mode level count too. ``fun`` runs once on ``args``, detached: a result that
    still needs a gradient (under the caller's grad mode) or carries a tangent can only come
    from a captured tensor. A tensor read on a branch not taken at these arguments slips by.
    """
    plain = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    tracking = torch.is_grad_enabled()
    with torch.enable_grad() if tracking else contextlib.nullcontext():
        out = fun(*plain)
    if not isinstance(out, torch.Tensor):
        return
    if (tracking and out.requires_grad) or forward_ad.unpack_dual(out).tangent is not None:
        raise InputError(
            f'npgrad op "scipy::{name}": fun reads a tensor that requires grad (or one of a '
            f"torch.func transform, or a dual tensor) that is not among its arguments; "
            f"expected every tensor it depends on among the params, so that its derivative "
            f"is computed: pass it after the starting point and take it as an argument of fun "
            f"(for a module: its parameters, with torch.func.functional_call)"
        )
