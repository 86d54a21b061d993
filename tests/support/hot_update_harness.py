"""Drive a real HotUpdatePlugin in-process: real LocalStore, real files, real threads.

``PluginRun`` builds the PluginContext the supervisor would build, runs
``init`` and ``run`` (in a thread, like the plugin runtime), waits for
``set_ready`` and turns ``handle`` results/PluginCallErrors into
``(status, body)`` pairs like the HTTP layer does.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from kidecar_supervisor.config_reader import ConfigReader
from kidecar_supervisor.plugin_api import PluginCallError, PluginContext, PodIdentity
from kidecar_supervisor.storage.base import ResultRecord, ResultStore
from kidecar_supervisor.storage.local import LocalStore
from workers.hot_update.config import HotUpdateConfig
from workers.hot_update.plugin import HotUpdatePlugin


def signal_config(file_dir: Path, process_name: str, **extra: Any) -> dict[str, Any]:
    return {"loadPatchType": "signal",
            "signal": {"processName": process_name, "signalName": "SIGHUP"},
            "fileDir": str(file_dir), "storageConfig": {"type": "Local"}, **extra}


def request_config(file_dir: Path, reload_url: str, deadline: float = 10.0,
                   **extra: Any) -> dict[str, Any]:
    return {"loadPatchType": "request",
            "request": {"url": reload_url, "method": "POST", "timeoutSeconds": 2,
                        "deadlineSeconds": deadline},
            "fileDir": str(file_dir), "storageConfig": {"type": "Local"}, **extra}


class PluginRun:
    """One plugin instance, as one start of the plugin process would have it."""

    def __init__(self, config: dict[str, Any], state_dir: Path, pod: str = "pod-a",
                 workload: str = "game-a", namespace: str = "default",
                 store: ResultStore | None = None) -> None:
        """``store`` defaults to a LocalStore in ``state_dir`` for ``workload``."""
        self.cfg = HotUpdateConfig.parse(ConfigReader(config, "plugins[0].config", "test.yaml"))
        self.identity = PodIdentity(pod_name=pod, namespace=namespace)
        self.store: Any = store if store is not None else LocalStore(
            self.cfg.storage, self.identity, state_dir, workload=workload)
        self.ready = threading.Event()
        self.gauges: dict[str, float] = {}
        self.ctx = PluginContext(
            name="hot_update", config=self.cfg, state_dir=state_dir, identity=self.identity,
            logger=logging.getLogger("kidecar.test.hot_update"),
            _store_factory=lambda cfg: self.store, _ready_cb=self._on_ready,
            _metrics_cb=self._on_gauge,
        )
        self.plugin = HotUpdatePlugin()
        self.thread = threading.Thread(target=self.plugin.run, daemon=True)

    def _on_ready(self, ready: bool) -> None:
        if ready:
            self.ready.set()

    def _on_gauge(self, name: str, value: float, labels: dict[str, str]) -> None:
        self.gauges[name] = value

    def start(self, wait_ready: bool = True, timeout: float = 60.0) -> PluginRun:
        self.plugin.init(self.ctx)
        self.thread.start()
        if wait_ready:
            assert self.ready.wait(timeout), "plugin never became ready"
        return self

    def stop(self) -> None:
        self.ctx.stop_requested.set()
        self.plugin.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "run() did not return after stop"
        self.store.close()

    def __enter__(self) -> PluginRun:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST /hot-update as the HTTP layer maps it: (status, JSON body)."""
        try:
            return 200, self.plugin.handle("hot_update", params)
        except PluginCallError as err:
            return err.status, {"error": err.message, **err.fields}

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.plugin.handle("hot_update_status", {})
        return result

    def results(self) -> list[ResultRecord]:
        return self.store.history("hot_update", 100)

    def events(self) -> list[tuple[str, str, int]]:
        with sqlite3.connect(self.store.path) as db:
            return list(db.execute("SELECT reason, message, warning FROM events ORDER BY id"))


def dir_listing(path: Path) -> dict[str, bytes]:
    """Every entry of ``path`` (hidden ones included) with its content."""
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def wait_until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")
