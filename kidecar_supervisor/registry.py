"""Which plugin class a config name means: built-ins plus entry points.

Third-party plugins register under the entry point group ``kidecar.plugins``
(``name = package.module:Class``); an entry point with a built-in's name
replaces the built-in, so a platform can ship a patched plugin without a fork.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points

from kidecar_supervisor.plugin_api import Plugin

log = logging.getLogger("kidecar.registry")

ENTRY_POINT_GROUP = "kidecar.plugins"

BUILTIN_PLUGINS: dict[str, str] = {
    "binary": "workers.binary:BinaryPlugin",
    "file_sync": "workers.file_sync.plugin:FileSyncPlugin",
    "hot_update": "workers.hot_update.plugin:HotUpdatePlugin",
    "http_probe": "workers.http_probe.plugin:HttpProbePlugin",
}


class UnknownPlugin(LookupError):
    pass


def available_plugins() -> dict[str, str]:
    """Every plugin name mapped to ``module:Class``, entry points winning."""
    found = dict(BUILTIN_PLUGINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return found


def load_plugin_class(name: str) -> type[Plugin]:
    """Import the class behind ``name``; UnknownPlugin with the choices if none."""
    target = available_plugins().get(name)
    if target is None:
        known = ", ".join(sorted(available_plugins()))
        raise UnknownPlugin(f"unknown plugin {name!r} (known: {known}; or give a 'binary:' block)")
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownPlugin(f"plugin {name!r} cannot be loaded from {target}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise UnknownPlugin(f"plugin {name!r}: {target} is not a kidecar Plugin class")
    return cls
