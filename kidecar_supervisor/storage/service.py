"""The storage process: owns every ResultStore of the pod (internal plugin).

Stores are opened lazily per StorageConfig, so the Kubernetes client is
imported only when some plugin actually uses InKube storage.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from kidecar_supervisor.plugin_api import Plugin, PluginCallError, PluginContext, PodIdentity
from kidecar_supervisor.protocol import STORAGE, STORE_METHOD, STORE_OPS
from kidecar_supervisor.storage import pod_watch
from kidecar_supervisor.storage.base import ResultStore, StorageConfig

#: how long a stopping storage process waits for writes in progress
_DRAIN_SECONDS = 8.0
#: how often the journal's numbers are published to /metrics
_METRICS_SECONDS = 5.0


def open_store(cfg: StorageConfig, identity: PodIdentity, state_dir: Path) -> ResultStore:
    """The backend for ``cfg.type``: Local (SQLite) or InKube (the Kubernetes API)."""
    if cfg.type == "InKube":
        from kidecar_supervisor.storage.inkube import InKubeStore

        return InKubeStore(cfg, identity, state_dir)
    from kidecar_supervisor.storage.local import LocalStore

    workload = os.environ.get("KIDECAR_WORKLOAD", "local")
    return LocalStore(cfg, identity, state_dir, workload=workload)


class StorageService(Plugin):
    name = STORAGE
    internal = True

    def init(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self._stores: dict[StorageConfig, ResultStore] = {}
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Condition()

    def store_for(self, cfg: StorageConfig) -> ResultStore:
        with self._lock:
            store = self._stores.get(cfg)
            if store is None:
                try:
                    store = open_store(cfg, self.ctx.identity, self.ctx.state_dir)
                except Exception as exc:  # noqa: BLE001 - tell the caller why
                    raise PluginCallError(503, f"cannot open {cfg.type} storage: {exc}") from exc
                self._stores[cfg] = store
            return store

    def run(self) -> None:
        while not self.ctx.stop_requested.wait(_METRICS_SECONDS):
            self.publish_metrics()
        # results still being written are finished before the stores close
        pod_watch.stop_all()  # wakes long-polls of the desired version
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=_DRAIN_SECONDS)
        with self._lock:
            for store in self._stores.values():
                store.close()

    def publish_metrics(self) -> None:
        """The Kubernetes write journal's numbers as gauges (one set per state dir).

        pending entries, the oldest one's age, entries kept under failed/,
        entries dropped past the caps by kind, and whether Events are off.
        """
        with self._lock:
            stores = list(self._stores.values())
        for store in stores:
            stats = getattr(store, "stats", None)
            if stats is None:
                continue
            numbers = stats()
            gauge = self.ctx.set_gauge
            gauge("kidecar_storage_journal_pending_entries", float(numbers["pending"]))
            gauge("kidecar_storage_journal_oldest_pending_seconds",
                  float(numbers["oldestPendingSeconds"]))
            gauge("kidecar_storage_journal_failed_entries", float(numbers["failed"]))
            for kind, count in numbers["dropped"].items():
                gauge("kidecar_storage_journal_dropped_entries", float(count), {"kind": kind})
            gauge("kidecar_storage_events_off", 1.0 if numbers["eventsOff"] else 0.0)
            return  # every InKube store of the process shares one journal

    def status(self) -> dict[str, Any]:
        return {"stores": sorted({cfg.type for cfg in self._stores})}

    def watch_annotation(self, cfg: StorageConfig, key: str, revision: int,
                         wait: float) -> dict[str, Any]:
        """Annotation ``key`` of this pod through the sidecar's one pod watch (issue 11).

        The watch uses the InKube store's API client; other stores have no pod.
        """
        store = self.store_for(cfg)
        client = getattr(store, "client", None)
        if client is None:
            return store.watch_annotation(key, revision, wait)
        identity = self.ctx.identity
        watch = pod_watch.shared(client, identity.namespace, identity.pod_name)
        return watch.wait(key, int(revision), float(wait)).to_dict()

    def handle(self, method: str, params: dict[str, Any]) -> Any:
        if method != STORE_METHOD:
            return super().handle(method, params)
        op = params.get("op")
        cfg = params.get("cfg")
        if op not in STORE_OPS or not isinstance(cfg, StorageConfig):
            raise PluginCallError(400, f"bad storage call {op!r}")
        if op == "watch_annotation":  # a long-poll: not a write to drain at stop
            return self.watch_annotation(cfg, *params.get("args", ()))
        with self._idle:
            self._in_flight += 1
        try:
            return getattr(self.store_for(cfg), op)(*params.get("args", ()))
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()
