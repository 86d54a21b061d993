"""Which plugin class a config name means: the ``kidecar.plugins`` entry points.

There is one list of built-in plugins, the ``kidecar.plugins`` entry points in
``setup.cfg``; this module reads it from kidecar's installed package metadata
instead of keeping a copy that could drift from it. Third-party plugins register
in the same group (``name = package.module:Class``, see ``tests/plugin_pkg``);
an entry point with a built-in's name replaces the built-in, so a platform can
ship a patched plugin without a fork.

Without kidecar's metadata (the source tree on ``PYTHONPATH``, never installed)
no built-in would be found; rather than "unknown plugin 'hot_update'" for a
valid config, that is one loud error saying how to install kidecar.
"""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution, entry_points

from kidecar_supervisor.plugin_api import Plugin

ENTRY_POINT_GROUP = "kidecar.plugins"
DISTRIBUTION = "kidecar"


class UnknownPlugin(LookupError):
    """A config names a plugin no entry point provides, or one that cannot be loaded."""


class PluginsNotInstalled(UnknownPlugin):
    """kidecar's own package metadata (and so its built-in plugin list) is missing."""


def builtin_plugins() -> dict[str, str]:
    """kidecar's own entry points (setup.cfg), ``name -> module:Class``."""
    try:
        dist = distribution(DISTRIBUTION)
    except PackageNotFoundError:
        raise PluginsNotInstalled(
            "kidecar's package metadata is missing, so its built-in plugins are unknown: "
            "install kidecar (pip install -e . in a checkout) instead of running it from "
            "the source tree") from None
    found = {ep.name: ep.value for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP}
    if not found:
        raise PluginsNotInstalled(
            f"kidecar {dist.version} is installed without {ENTRY_POINT_GROUP} entry points: "
            "reinstall it (pip install -e .) so its built-in plugins are registered")
    return found


def available_plugins() -> dict[str, str]:
    """Every plugin name mapped to ``module:Class``; other packages' entry points win."""
    found = builtin_plugins()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if not _from_kidecar(ep):
            found[ep.name] = ep.value
    return found


def _from_kidecar(ep: EntryPoint) -> bool:
    return ep.dist is not None and ep.dist.name.lower() == DISTRIBUTION


def load_plugin_class(name: str) -> type[Plugin]:
    """Import the class behind ``name``; UnknownPlugin with the choices if none."""
    plugins = available_plugins()
    target = plugins.get(name)
    if target is None:
        known = ", ".join(sorted(plugins))
        raise UnknownPlugin(f"unknown plugin {name!r} (known: {known}; or give a 'binary:' block)")
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownPlugin(f"plugin {name!r} cannot be loaded from {target}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise UnknownPlugin(f"plugin {name!r}: {target} is not a kidecar Plugin class")
    return cls
