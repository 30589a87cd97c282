"""A thread-safe map from op names to ops."""

from __future__ import annotations

import difflib
import threading
import warnings
from typing import Any

from npgrad.errors import DefinitionError, UnknownOpError

_lock = threading.Lock()
_ops: dict[str, Any] = {}


def register(op: Any) -> None:
    """Add ``op`` under its name; a taken name is an error that says where the first was defined."""
    rules = op._rules
    with _lock:
        first = _ops.get(rules.name)
        if first is None or _same_definition(first._rules, rules):
            _ops[rules.name] = op
    if first is None:
        return
    owner = getattr(first._rules.forward, "__qualname__", rules.opname)
    if _same_definition(first._rules, rules):
        # A notebook cell or a script run again (exec, %run): the new definition is meant.
        warnings.warn(
            f'npgrad op "{rules.name}": defined again by {owner} in module {rules.module} '
            f"(at {rules.defined_at}); the new definition replaces the old one",
            stacklevel=4,
        )
        return
    raise DefinitionError(
        f'npgrad op "{rules.name}": the name is already registered by {owner} '
        f"defined at {first._rules.defined_at}; the new definition at {rules.defined_at} was "
        f"refused. Give the new op another name (names are unique per process)"
    )


def _same_definition(first: Any, new: Any) -> bool:
    """Whether two definitions are one function defined again: same module, same name."""
    qualname = getattr(new.forward, "__qualname__", None)
    return (
        qualname is not None
        and first.module == new.module
        and getattr(first.forward, "__qualname__", None) == qualname
    )


def lookup(name: str) -> Any:
    """Return the op registered under ``name``, or raise UnknownOpError suggesting close names."""
    try:
        return _ops[name]
    except KeyError:
        pass
    known = list(_ops)
    # A bare name ("kv") or a misspelt one is looked up by its part after "::" too.
    bare = name.split("::")[-1]
    similar = set(difflib.get_close_matches(bare, [k.split("::")[1] for k in known], n=3))
    close = (
        [k for k in known if k.split("::")[1] == bare]
        or [k for k in known if k.split("::")[1] in similar][:3]
        or difflib.get_close_matches(name, known, n=3)
    )
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
