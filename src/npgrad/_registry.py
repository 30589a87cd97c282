"""A thread-safe map from op names to ops."""

from __future__ import annotations

import difflib
import threading
from typing import TYPE_CHECKING

from npgrad.errors import DefinitionError, UnknownOpError

if TYPE_CHECKING:
    from npgrad._op import Op

_lock = threading.Lock()
_ops: dict[str, Op] = {}


def register(op: Op) -> None:
    """Add ``op`` under its name; a taken name is an error that says where the first was defined."""
    with _lock:
        first = _ops.get(op.name)
        if first is None:
            _ops[op.name] = op
            return
    owner = getattr(first.forward, "__qualname__", first.__name__)
    raise DefinitionError(
        f'npgrad op "{op.name}": the name is already registered by {owner} '
        f"defined at {first.defined_at}; the new definition at {op.defined_at} was refused. "
        f"Give the new op another name (names are unique per process)"
    )


def get(name: str) -> Op:
    """Return the op registered under ``name``.

    Args:
        name: ``"namespace::name"``, as given to `npgrad.op`.

    >>> import npgrad
    >>> @npgrad.op("doc::twice")
    ... def twice(x):
    ...     return 2 * x
    >>> npgrad.get("doc::twice") is twice
    True
    """
    try:
        return _ops[name]
    except KeyError:
        pass
    close = difflib.get_close_matches(name, list(_ops), n=3)
    hint = (
        f"did you mean {', '.join(repr(c) for c in close)}?"
        if close
        else ("import the module or plugin that defines it first")
    )
    raise UnknownOpError(f'npgrad: no op is registered under the name "{name}"; {hint}') from None


def ops() -> list[str]:
    """Return the names of all registered ops, sorted.

    >>> import npgrad
    >>> "doc::twice" in npgrad.ops()
    True
    """
    with _lock:
        return sorted(_ops)
