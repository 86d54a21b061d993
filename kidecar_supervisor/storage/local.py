"""Local result store: SQLite in the state directory, for running without a cluster.

SQLite gives atomic, durable writes and concurrent readers for free, so a
crash mid-write never leaves a half-recorded result.

A database that is not one (0 bytes, a garbage header, a truncated or
malformed file) would otherwise fail every later write and every restore
while health stays green. It is checked at start (``PRAGMA quick_check``)
and whenever SQLite reports corruption during a call: the bad file is moved
aside, kept and named with the UTC time (``results.sqlite3.corrupt-<time>``,
with its ``-wal``/``-shm``), a fresh database takes its place, the move is
logged as an error, recorded as a ``ResultStoreReplaced`` warning event and
counted (``corrupt_replaced``). A full disk is not corruption: that error is
raised to the caller and nothing is moved.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

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
#: what SQLite says about a file that is not (or no longer) a sound database
_CORRUPT_WORDS = ("malformed", "not a database", "corrupt")
_SIDE_FILES = ("-wal", "-shm", "-journal")

T = TypeVar("T")


class CorruptDatabase(sqlite3.DatabaseError):
    """The results database failed its integrity check."""


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """Corruption, as opposed to a full disk, a lock or a read-only file system."""
    if isinstance(exc, CorruptDatabase):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return False
    return any(word in str(exc).lower() for word in _CORRUPT_WORDS)


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
        #: bad databases moved aside by this store (the files stay in the state dir)
        self.corrupt_replaced: list[Path] = []
        self._pending_event: str | None = None
        self._db = self._open_checked()
        self._flush_replaced_event()

    # -- opening, checking, replacing -------------------------------------------------
    def _open_checked(self) -> sqlite3.Connection:
        """Open the database; a corrupt one is moved aside and a fresh one opened."""
        try:
            return self._open()
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            self._move_aside(exc)
            return self._open()

    def _open(self) -> sqlite3.Connection:
        if self.path.exists() and self.path.stat().st_size == 0:
            # SQLite would take it for a new database, but something truncated it
            raise CorruptDatabase("the file is empty (0 bytes): it was truncated")
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            problems = [row[0] for row in db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise CorruptDatabase("integrity check failed: " + "; ".join(problems[:5]))
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self, exc: BaseException) -> None:
        """Keep the bad file (and its WAL) under a name with the time; log and count it."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{time.time_ns() % 10**9:09d}"
        kept = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", *_SIDE_FILES):
            source = self.path.with_name(self.path.name + suffix)
            if source.exists():
                os.replace(source, kept.with_name(kept.name + suffix))
        self.corrupt_replaced.append(kept)
        log.error("results database %s is corrupt (%s): moved aside to %s and started a "
                  "fresh one; results recorded before are in the kept file", self.path, exc,
                  kept.name, extra={"kept": str(kept), "replaced": len(self.corrupt_replaced)})
        self._pending_event = (f"results database was corrupt ({exc}); kept as {kept.name}, "
                               "a fresh one was started")

    def _replace_corrupt(self, exc: sqlite3.DatabaseError) -> None:
        """During a call: close, move aside, reopen (caller holds the lock)."""
        try:
            self._db.close()
        except sqlite3.Error:
            pass
        self._move_aside(exc)
        self._db = self._open()

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` under the lock; on corruption replace the database and run it again."""
        with self._lock:
            try:
                return work(self._db)
            except sqlite3.DatabaseError as exc:
                if not is_corruption(exc):
                    raise
                self._replace_corrupt(exc)
                return work(self._db)
            finally:
                self._flush_replaced_event()

    def _flush_replaced_event(self) -> None:
        """Record the replacement in the fresh database's events (caller holds the lock)."""
        message = self._pending_event
        if message is None:
            return
        try:
            with self._db:
                self._db.execute(
                    "INSERT INTO events (ts, reason, message, warning) VALUES (?, ?, ?, 1)",
                    (time.time(), "ResultStoreReplaced", message))
            self._pending_event = None
        except sqlite3.Error as exc:  # e.g. the disk is full too: the log line stays
            log.warning("cannot record the ResultStoreReplaced event: %s", exc)

    def record_result(self, record: ResultRecord) -> str:
        record.pod = record.pod or self.pod
        record.workload = record.workload or self.workload

        def insert(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT INTO results (plugin, pod, workload, version, success, ts, body)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (record.plugin, record.pod, record.workload, record.version,
                     int(record.success), record.timestamp, json.dumps(record.to_dict())),
                )
                db.execute(
                    "DELETE FROM results WHERE id <= (SELECT MAX(id) FROM results) - ?",
                    (_KEEP_RESULTS,),
                )

        self._call(insert)
        return WRITTEN

    def latest_for_pod(self, plugin: str) -> ResultRecord | None:
        return self._latest("pod", plugin, self.pod)

    def latest_for_workload(self, plugin: str) -> ResultRecord | None:
        return self._latest("workload", plugin, self.workload)

    def _latest(self, column: str, plugin: str, value: str) -> ResultRecord | None:
        row = self._call(lambda db: db.execute(
            f"SELECT body FROM results WHERE plugin = ? AND {column} = ? AND success = 1"
            " ORDER BY ts DESC, id DESC LIMIT 1",
            (plugin, value),
        ).fetchone())
        return ResultRecord.from_dict(json.loads(row[0])) if row else None

    def history(self, plugin: str, limit: int = 20) -> list[ResultRecord]:
        rows = self._call(lambda db: db.execute(
            "SELECT body FROM results WHERE plugin = ? AND pod = ? ORDER BY id DESC LIMIT ?",
            (plugin, self.pod, limit),
        ).fetchall())
        return [ResultRecord.from_dict(json.loads(r[0])) for r in rows]

    def apply_markers(self, update: MarkerUpdate) -> str:
        changes = [("label", k, v) for k, v in update.labels.items()]
        changes += [("annotation", k, v) for k, v in update.annotations.items()]
        if update.target_value is not None:
            changes.append(("target", self.cfg.json_path or "/spec/opsState", update.target_value))

        def write(db: sqlite3.Connection) -> None:
            with db:
                for kind, key, value in changes:
                    if value is None:
                        db.execute("DELETE FROM markers WHERE kind = ? AND key = ?", (kind, key))
                    else:
                        db.execute(
                            "INSERT OR REPLACE INTO markers (kind, key, value) VALUES (?, ?, ?)",
                            (kind, key, value),
                        )

        self._call(write)
        return WRITTEN

    def markers(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {"label": {}, "annotation": {}, "target": {}}
        rows = self._call(lambda db: db.execute("SELECT kind, key, value FROM markers").fetchall())
        for kind, key, value in rows:
            out.setdefault(kind, {})[key] = value
        return out

    def emit_event(self, reason: str, message: str, warning: bool = False) -> None:
        log.log(logging.WARNING if warning else logging.INFO, "event %s: %s", reason, message)

        def insert(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT INTO events (ts, reason, message, warning) VALUES (?, ?, ?, ?)",
                    (time.time(), reason, message, int(warning)),
                )
                db.execute(
                    "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?",
                    (_KEEP_EVENTS,),
                )

        self._call(insert)

    def close(self) -> None:
        with self._lock:
            self._db.close()
