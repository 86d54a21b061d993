"""Helpers for driving the http_probe plugin in-process (tests and the benchmark).

``CountingStore`` wraps a real store and records every ``apply_markers``
call (and can be told to fail, like a store whose API went away);
``run_plugin`` starts the plugin's ``run`` in a thread the way the supervisor
would and stops it on exit, checking it returned promptly.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kidecar_supervisor.config_reader import ConfigReader
from kidecar_supervisor.plugin_api import PluginContext, PodIdentity
from kidecar_supervisor.storage.base import (
    MarkerUpdate,
    ResultRecord,
    ResultStore,
    StorageConfig,
)
from kidecar_supervisor.storage.local import LocalStore
from workers.http_probe.config import HttpProbeConfig
from workers.http_probe.plugin import HttpProbePlugin

IDENTITY = PodIdentity(pod_name="game-0", namespace="kidecar-test")


class CountingStore(ResultStore):
    """A real store that counts marker writes; ``fail`` makes writes raise."""

    def __init__(self, inner: ResultStore) -> None:
        self.inner = inner
        self.calls: list[MarkerUpdate] = []
        self.attempts = 0
        self.fail = False
        #: when set, returned instead of the inner store's answer (e.g. JOURNALED)
        self.result: str | None = None
        self._lock = threading.Lock()

    def apply_markers(self, update: MarkerUpdate) -> str:
        with self._lock:
            self.attempts += 1
            if self.fail:
                raise ConnectionError("store unavailable")
            self.calls.append(copy.deepcopy(update))
        answer = self.inner.apply_markers(update)
        return self.result or answer

    def record_result(self, record: ResultRecord) -> str:
        return self.inner.record_result(record)

    def latest_for_pod(self, plugin: str) -> ResultRecord | None:
        return self.inner.latest_for_pod(plugin)

    def latest_for_workload(self, plugin: str) -> ResultRecord | None:
        return self.inner.latest_for_workload(plugin)

    def emit_event(self, reason: str, message: str, warning: bool = False) -> None:
        self.inner.emit_event(reason, message, warning)

    def close(self) -> None:
        self.inner.close()


@dataclass
class Running:
    """A plugin running in-process, with its stores and published gauges."""

    plugin: HttpProbePlugin
    stores: dict[StorageConfig, CountingStore]
    gauges: list[tuple[str, float, dict[str, str]]] = field(default_factory=list)

    @property
    def writes(self) -> int:
        return sum(len(s.calls) for s in self.stores.values())

    def markers(self) -> dict[str, dict[str, str]]:
        store = next(iter(self.stores.values()))
        inner = store.inner
        assert isinstance(inner, LocalStore)
        return inner.markers()

    def endpoint(self, index: int = 0) -> dict[str, Any]:
        status: dict[str, Any] = self.plugin.status()["endpoints"][index]
        return status


def parse_config(config: dict[str, Any]) -> HttpProbeConfig:
    return HttpProbeConfig.parse(ConfigReader(config, "plugins[0].config", "test"))


@contextmanager
def run_plugin(
    config: dict[str, Any], state_dir: Path,
    store_factory: Callable[[StorageConfig], ResultStore] | None = None,
    identity: PodIdentity = IDENTITY,
) -> Iterator[Running]:
    """Run the plugin on ``config`` with counting LocalStores (or ``store_factory``'s)."""
    stores: dict[StorageConfig, CountingStore] = {}
    gauges: list[tuple[str, float, dict[str, str]]] = []

    def factory(cfg: StorageConfig) -> ResultStore:
        inner = store_factory(cfg) if store_factory else LocalStore(cfg, identity, state_dir)
        stores[cfg] = CountingStore(inner)
        return stores[cfg]

    ctx = PluginContext(
        name="http_probe", config=parse_config(config), state_dir=state_dir, identity=identity,
        logger=logging.getLogger("kidecar.plugin.http_probe"), _store_factory=factory,
        _metrics_cb=lambda name, value, labels: gauges.append((name, value, labels)),
    )
    plugin = HttpProbePlugin()
    plugin.init(ctx)
    thread = threading.Thread(target=plugin.run, name="plugin-run", daemon=True)
    thread.start()
    try:
        yield Running(plugin, stores, gauges)
    finally:
        started = time.monotonic()
        plugin.stop()
        thread.join(10)
        assert not thread.is_alive(), "run() did not return after stop()"
        assert time.monotonic() - started < 5, "run() took too long to return after stop()"
        for store in stores.values():
            store.close()


def wait_until(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``check`` until truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        time.sleep(interval)
        value = check()
    return value
