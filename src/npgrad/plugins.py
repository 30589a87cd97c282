"""Plugin discovery through the entry-point group ``npgrad.plugins``.

A plugin is an importable module named by an entry point, for example in its pyproject.toml::

    [project.entry-points."npgrad.plugins"]
    mylib = "mylib.npgrad_ops"

Importing it registers its ops. Importing npgrad loads no plugin; `load_plugins` loads them all
once, skips what is loaded, and a plugin that fails to import is reported by a warning and never
stops the others. ``NPGRAD_DISABLE_PLUGINS=1`` turns discovery off.
"""

from __future__ import annotations

import os
import threading
import warnings
from importlib.metadata import entry_points
from types import ModuleType

from npgrad.errors import PluginWarning, UnknownOpError

GROUP = "npgrad.plugins"

_lock = threading.Lock()
# Plugin name -> the top-level package of the module its entry point names.
_loaded: dict[str, str] = {}
# Plugin name -> why it failed to load, on the last attempt.
_failed: dict[str, str] = {}


def load_plugins() -> list[str]:
    """Import every installed plugin once; return the names of all plugins loaded so far.

    Examples:
        >>> import npgrad
        >>> "scipy" in npgrad.load_plugins()
        True
    """
    if os.environ.get("NPGRAD_DISABLE_PLUGINS", "").strip().lower() in ("1", "true", "yes"):
        return sorted(_loaded)
    with _lock:
        _failed.clear()
        for point in entry_points(group=GROUP):
            if point.name in _loaded:
                continue
            try:
                point.load()
            except Exception as error:
                _failed[point.name] = f"{point.value}: {type(error).__name__}: {error}"
                warnings.warn(
                    f'npgrad: plugin "{point.name}" ({point.value}) failed to load: '
                    f"{type(error).__name__}: {error}; its ops are unavailable, the other "
                    f"plugins still load. Fix or uninstall it, or set NPGRAD_DISABLE_PLUGINS=1",
                    PluginWarning,
                    stacklevel=2,
                )
                continue
            _loaded[point.name] = point.value.split(":")[0].split(".")[0]
        return sorted(_loaded)


def load_plugin(name: str) -> ModuleType:
    """Import the plugin registered under ``name`` (through its entry point) and return it.

    Args:
        name: the entry point's name, e.g. ``"scipy"``.

    Examples:
        >>> import npgrad.plugins
        >>> npgrad.plugins.load_plugin("scipy").__name__
        'npgrad_scipy'
    """
    found = entry_points(group=GROUP, name=name)
    if not found:
        installed = ", ".join(sorted(point.name for point in entry_points(group=GROUP)))
        raise UnknownOpError(
            f'npgrad: no plugin is registered under the name "{name}" (installed: '
            f"{installed or 'none'}); install it, or name one of those"
        )
    (point,) = found
    module: ModuleType = point.load()
    with _lock:
        _loaded[point.name] = point.value.split(":")[0].split(".")[0]
    return module


def failed_plugins() -> dict[str, str]:
    """Return the plugins that failed to load on the last attempt, with the cause of each."""
    return dict(_failed)


def plugin_of(module: str) -> str:
    """Return the name of the loaded plugin that ``module`` belongs to, else its package."""
    package = module.split(".")[0]
    for name, root in _loaded.items():
        if root == package:
            return name
    return package
