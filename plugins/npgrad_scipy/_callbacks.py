"""What the ops that call a user's torch function share: its arguments, and a check of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

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
    """Refuse a ``fun`` that reads tensors needing a gradient other than its arguments.

    Their gradient would silently be missing: the op sees only the tensors it is given.
    ``fun`` runs once on ``args``, each floating tensor made a fresh leaf.
    """
    leaves = [
        a.detach().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
        for a in args
    ]
    with torch.enable_grad():
        out = fun(*leaves)
    ours = {id(leaf) for leaf in leaves}
    seen: set[Any] = set()
    stack = [out.grad_fn] if isinstance(out, torch.Tensor) else []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)
        if variable is not None and id(variable) not in ours:
            raise InputError(
                f'npgrad op "scipy::{name}": fun reads a tensor of shape '
                f"{tuple(variable.shape)} that requires grad but is not among its arguments; "
                f"expected every tensor it depends on among the params, so that its gradient is "
                f"computed: pass it after the starting point and take it as an argument of fun "
                f"(for a module: its parameters, with torch.func.functional_call)"
            )
        stack.extend(next_node for next_node, _ in node.next_functions)
