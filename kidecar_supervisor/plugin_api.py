"""The plugin interface: the only kidecar module a plugin imports.

Plugins import this module (and ``kidecar_supervisor.plugin_kit``, the helpers
plugins share), never other kidecar modules: the record and config types they
need are re-exported here.

A plugin is a class with a name, a version, a config type and four methods
(init, run, stop, status), plus ``handle`` for calls routed to it (e.g. the
HTTP ``/hot-update`` request). The supervisor forks one process per plugin and
drives the plugin through a ``PluginContext``; the plugin never sees the
supervisor, the pipes or the HTTP layer. Built-in plugins and third-party ones
(entry point group ``kidecar.plugins``) use exactly this interface.
"""

from __future__ import annotations

import abc
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from kidecar_supervisor.config_reader import ConfigError, ConfigReader, join_path
from kidecar_supervisor.pod_identity import PodIdentity
from kidecar_supervisor.storage.base import (
    JOURNALED,
    PARTIAL,
    RESULT_PARTS,
    WRITTEN,
    MarkerPolicy,
    MarkerUpdate,
    ResultRecord,
    ResultStore,
    StorageConfig,
    TargetRef,
    recorded_parts,
)

# Plugins import these names from here, never from the modules that define them:
# the core may move its modules around, this list is the contract.
__all__ = [
    "JOURNALED",
    "PARTIAL",
    "RESULT_PARTS",
    "WRITTEN",
    "ConfigError",
    "ConfigReader",
    "MarkerPolicy",
    "MarkerUpdate",
    "Plugin",
    "PluginCallError",
    "PluginConfig",
    "PluginContext",
    "PodIdentity",
    "ResultRecord",
    "ResultStore",
    "StorageConfig",
    "TargetRef",
    "join_path",
    "recorded_parts",
    "storage_configs",
]


class PluginConfig(Protocol):
    """A plugin's typed config, built from its ``config:`` mapping."""

    @classmethod
    def parse(cls, reader: ConfigReader) -> PluginConfig:
        """Validate ``reader`` and return the typed config; raise ConfigError."""
        ...


def storage_configs(config: object) -> list[StorageConfig]:
    """The stores a plugin's config writes to, as the config itself declares them.

    A plugin config that writes results or markers implements
    ``storage_configs()``; the supervisor sends a plugin-failure Event to the
    first InKube store any plugin declares, so no core code guesses attribute
    names of plugin configs.
    """
    declare = getattr(type(config), "storage_configs", None)
    if declare is None:
        return []
    return [cfg for cfg in declare(config) if isinstance(cfg, StorageConfig)]


@dataclass(frozen=True)
class EmptyConfig:
    """For plugins that take no settings: any key is an error."""

    @classmethod
    def parse(cls, reader: ConfigReader) -> EmptyConfig:
        reader.reject_unknown()
        return cls()


class PluginCallError(Exception):
    """A call to a plugin failed in a way the caller can act on.

    ``status`` is the HTTP status the HTTP layer answers with (400 bad input,
    409 conflict, 422 unprocessable, 502/504 upstream, 503 not ready); extra
    keyword fields are added to the JSON error body.
    """

    def __init__(self, status: int, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "error": self.message, **self.fields}


@dataclass
class PluginContext:
    """What the supervisor gives a plugin process.

    ``storage(cfg)`` returns a ResultStore proxy: the real store lives in the
    one process that owns all Kubernetes/SQLite I/O, so plugins stay small.
    ``set_ready`` tells ``/readyz`` this plugin is ready (e.g. hot_update only
    after it re-applied the restored version). ``stop_requested`` is set when
    the supervisor asks the plugin to stop; ``run`` should return soon after.
    """

    name: str
    config: Any
    state_dir: Path
    identity: PodIdentity
    logger: logging.Logger
    stop_requested: threading.Event = field(default_factory=threading.Event)
    #: this process replaces one of the same plugin that asked to be recycled (and
    #: was stopped gracefully for it): what that one handed over may be trusted
    recycled: bool = False
    _store_factory: Any = None
    _ready_cb: Any = None
    _metrics_cb: Any = None
    _recycle_cb: Any = None

    def storage(self, cfg: StorageConfig) -> ResultStore:
        if self._store_factory is None:
            raise RuntimeError("no storage is available in this process")
        store: ResultStore = self._store_factory(cfg)
        return store

    def set_ready(self, ready: bool = True) -> None:
        if self._ready_cb is not None:
            self._ready_cb(ready)

    def set_gauge(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        """Publish a numeric value on /metrics (e.g. http_probe's HTTPMetric)."""
        if self._metrics_cb is not None:
            self._metrics_cb(name, value, labels or {})

    def recycle(self, reason: str) -> None:
        """Ask to be replaced by a fresh process of this plugin once no call runs in it.

        For a plugin that just finished a one-off heavy task: the pages it wrote
        stay its own for the rest of its life, a fresh fork of the supervisor
        gives them back (hot_update after an update: ~4 MiB, docs/footprint.md).
        The supervisor stops this process gracefully (calls to it wait meanwhile,
        ``/readyz`` stays as it was) and starts a new one, which runs ``init``
        and ``run`` again: only a plugin whose state survives a restart may ask.
        Not a failure: it does not count as a restart.
        """
        if self._recycle_cb is not None:
            self._recycle_cb(reason)


class Plugin(abc.ABC):
    """Base class of every plugin. One instance lives in its own process."""

    name: ClassVar[str]
    version: ClassVar[str] = "0.1.0"
    config_type: ClassVar[type] = EmptyConfig
    #: internal plugins (e.g. the storage service) are hidden from user config
    internal: ClassVar[bool] = False
    #: False: the plugin calls ``ctx.set_ready(True)`` itself once it is ready
    #: (``/readyz`` waits for it); True: ready as soon as ``run`` starts
    ready_on_start: ClassVar[bool] = True

    def init(self, ctx: PluginContext) -> None:  # noqa: B027 - optional hook
        """Prepare resources; raise to fail start-up with a clear message."""
        self.ctx = ctx

    @abc.abstractmethod
    def run(self) -> None:
        """Do the plugin's work; block until ``ctx.stop_requested`` is set."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Ask ``run`` to return; called from another thread of the process."""

    def status(self) -> dict[str, Any]:
        """Small JSON-able infos shown by ``/plugins/<name>``; must not block."""
        return {}

    def handle(self, method: str, params: dict[str, Any]) -> Any:
        """Answer a call routed to this plugin; raise PluginCallError on bad input.

        Each call runs in its own thread of the plugin process, concurrently
        with ``run`` and with other calls; the return value must be JSON-able.
        """
        raise PluginCallError(404, f"plugin {self.name} has no method {method!r}")
