"""A thread-safe map from op names to ops."""

from __future__ import annotations

import difflib
import threading
from typing import Any

from npgrad.errors import DefinitionError, UnknownOpError

_lock = threading.Lock()
_ops: dict[str, Any] = {}


def register(op: Any) -> None:
    """Add ``op`` under its name; a taken name is an error that says where the first was defined."""
    rules = op._rules
    with _lock:
        first = _ops.get(rules.name)
        if first is None:
            _ops[rules.name] = op
            return
    owner = getattr(first._rules.forward, "__qualname__", rules.opname)
    raise DefinitionError(
        f'npgrad op "{rules.name}": the name is already registered by {owner} '
        f"defined at {first._rules.defined_at}; the new definition at {rules.defined_at} was "
        f"refused. Give the new op another name (names are unique per process)"
    )


def lookup(name: str) -> Any:
    """Return the op registered under ``name``, or raise UnknownOpError suggesting close names."""
    try:
        return _ops[name]
    except KeyError:
        pass
    close = difflib.get_close_matches(name, list(_ops), n=3)
    hint = (
        f"did you mean {', '.join(repr(c) for c in close)}?"
        if close
        else "import the module or plugin that defines it first"
    )
    raise UnknownOpError(f'npgrad: no op is registered under the name "{name}"; {hint}') from None


def names() -> list[str]:
    """Return the names of all registered ops, sorted."""
    with _lock:
        return sorted(_ops)
