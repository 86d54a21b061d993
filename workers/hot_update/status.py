"""What ``GET /hot-update`` shows: applied version, state, progress, recent history.

Written by the one running update, read by status calls and the heartbeat from
other threads; a lock keeps each snapshot consistent and every read is O(1)
in the history size, so the status never blocks on a download.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from kidecar_supervisor.plugin_api import ResultRecord
from workers.hot_update.download import Progress

HISTORY_SIZE = 20

IDLE = "idle"
DOWNLOADING = "downloading"
RELOADING = "reloading"
FAILED = "failed"


@dataclass(frozen=True)
class Applied:
    """The version whose file is in place and loaded."""

    version: str
    url: str
    file_name: str
    sha256: str = ""
    since: float = 0.0


class UpdateStatus:
    """Thread-safe state of the plugin, rendered by ``snapshot``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.applied: Applied | None = None
        self.state = IDLE
        self.running: dict[str, Any] | None = None
        self.progress: Progress | None = None
        self.last_error: dict[str, Any] | None = None
        self.restore: dict[str, Any] = {"state": "pending"}
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_SIZE)

    def start(self, version: str, url: str, restoring: bool) -> Progress:
        progress = Progress()
        with self._lock:
            self.state = DOWNLOADING
            self.running = {"version": version, "url": url, "restoring": restoring,
                            "startedAt": time.time()}
            self.progress = progress
        return progress

    def set_state(self, state: str) -> None:
        with self._lock:
            self.state = state

    def succeeded(self, applied: Applied, record: ResultRecord) -> None:
        with self._lock:
            self.applied = applied
            self.state = IDLE
            self.running = None
            self.progress = None
            self.last_error = None
            self.history.appendleft(record.to_dict())

    def failed(self, record: ResultRecord | None, error: dict[str, Any]) -> None:
        with self._lock:
            self.state = FAILED
            self.running = None
            self.progress = None
            self.last_error = error
            if record is not None:
                self.history.appendleft(record.to_dict())

    def set_applied(self, applied: Applied | None) -> None:
        with self._lock:
            self.applied = applied

    def set_restore(self, **info: Any) -> None:
        with self._lock:
            self.restore = info

    def seed_history(self, records: list[ResultRecord]) -> None:
        """Add what the store already knows, oldest last, without duplicates."""
        with self._lock:
            known = {(h["version"], h["timestamp"]) for h in self.history}
            for record in records:
                if (record.version, record.timestamp) not in known:
                    self.history.append(record.to_dict())
            ordered = sorted(self.history, key=lambda h: h["timestamp"], reverse=True)
            self.history = deque(ordered, maxlen=HISTORY_SIZE)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            applied = self.applied
            progress = None
            if self.progress is not None:
                total = self.progress.total
                done = self.progress.done
                progress = {"bytes": done, "total": total,
                            "percent": round(100.0 * done / total, 1) if total else None}
            return {
                "version": applied.version if applied else "",
                "url": applied.url if applied else "",
                "file": applied.file_name if applied else "",
                "sha256": applied.sha256 if applied else "",
                "appliedAt": applied.since if applied else None,
                "state": self.state,
                "running": dict(self.running) if self.running else None,
                "progress": progress,
                "lastError": dict(self.last_error) if self.last_error else None,
                "restore": dict(self.restore),
                "history": list(self.history),
            }

    def brief(self) -> dict[str, Any]:
        """The small dict for the heartbeat's ``status()``."""
        with self._lock:
            out: dict[str, Any] = {
                "version": self.applied.version if self.applied else "",
                "state": self.state,
            }
            if self.progress is not None:
                out["bytes"] = self.progress.done
            if self.last_error:
                out["lastError"] = self.last_error.get("error", "")
            return out
