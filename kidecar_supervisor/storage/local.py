"""Local result store: SQLite in the state directory, for running without a cluster.

SQLite gives atomic, durable writes and concurrent readers for free, so a
crash mid-write never leaves a half-recorded result.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from pathlib import Path

from kidecar_supervisor.pod_identity import PodIdentity
from kidecar_supervisor.storage.base import (
    WRITTEN,
    MarkerUpdate,
    ResultRecord,
    ResultStore,
    StorageConfig,
)

log = logging.getLogger("kidecar.storage.local")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    plugin TEXT NOT NULL,
    pod TEXT NOT NULL,
    workload TEXT NOT NULL,
    version TEXT NOT NULL,
    success INTEGER NOT NULL,
    ts REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_pod ON results (plugin, pod, success, id);
CREATE INDEX IF NOT EXISTS results_workload ON results (plugin, workload, success, id);
CREATE TABLE IF NOT EXISTS markers (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    warning INTEGER NOT NULL
);
"""

#: keep the tables bounded: a sidecar lives for months
_KEEP_RESULTS = 1000
_KEEP_EVENTS = 500


class LocalStore(ResultStore):
    """Results, markers and events in ``<state_dir>/results.sqlite3``."""

    def __init__(self, cfg: StorageConfig, identity: PodIdentity, state_dir: Path,
                 workload: str = "local") -> None:
        self.cfg = cfg
        self.pod = identity.pod_name or "local"
        self.workload = workload
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "results.sqlite3"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def record_result(self, record: ResultRecord) -> str:
        record.pod = record.pod or self.pod
        record.workload = record.workload or self.workload
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO results (plugin, pod, workload, version, success, ts, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (record.plugin, record.pod, record.workload, record.version,
                 int(record.success), record.timestamp, json.dumps(record.to_dict())),
            )
            self._db.execute(
                "DELETE FROM results WHERE id <= (SELECT MAX(id) FROM results) - ?",
                (_KEEP_RESULTS,),
            )
        return WRITTEN

    def latest_for_pod(self, plugin: str) -> ResultRecord | None:
        return self._latest("pod", plugin, self.pod)

    def latest_for_workload(self, plugin: str) -> ResultRecord | None:
        return self._latest("workload", plugin, self.workload)

    def _latest(self, column: str, plugin: str, value: str) -> ResultRecord | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT body FROM results WHERE plugin = ? AND {column} = ? AND success = 1"
                " ORDER BY ts DESC, id DESC LIMIT 1",
                (plugin, value),
            ).fetchone()
        return ResultRecord.from_dict(json.loads(row[0])) if row else None

    def history(self, plugin: str, limit: int = 20) -> list[ResultRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM results WHERE plugin = ? AND pod = ? ORDER BY id DESC LIMIT ?",
                (plugin, self.pod, limit),
            ).fetchall()
        return [ResultRecord.from_dict(json.loads(r[0])) for r in rows]

    def apply_markers(self, update: MarkerUpdate) -> str:
        changes = [("label", k, v) for k, v in update.labels.items()]
        changes += [("annotation", k, v) for k, v in update.annotations.items()]
        if update.target_value is not None:
            changes.append(("target", self.cfg.json_path or "/spec/opsState", update.target_value))
        with self._lock, self._db:
            for kind, key, value in changes:
                if value is None:
                    self._db.execute("DELETE FROM markers WHERE kind = ? AND key = ?", (kind, key))
                else:
                    self._db.execute(
                        "INSERT OR REPLACE INTO markers (kind, key, value) VALUES (?, ?, ?)",
                        (kind, key, value),
                    )
        return WRITTEN

    def markers(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {"label": {}, "annotation": {}, "target": {}}
        with self._lock:
            for kind, key, value in self._db.execute("SELECT kind, key, value FROM markers"):
                out.setdefault(kind, {})[key] = value
        return out

    def emit_event(self, reason: str, message: str, warning: bool = False) -> None:
        log.log(logging.WARNING if warning else logging.INFO, "event %s: %s", reason, message)
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO events (ts, reason, message, warning) VALUES (?, ?, ?, ?)",
                (time.time(), reason, message, int(warning)),
            )
            self._db.execute(
                "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (_KEEP_EVENTS,)
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
