"""A check shared by the ops that call a user's torch function: no tensor read from outside."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from npgrad.errors import InputError


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
