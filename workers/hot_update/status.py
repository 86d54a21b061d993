"""What ``GET /hot-update`` shows: applied version, state, progress, recent history.

Written by the one running update, read by status calls and the heartbeat from
other threads; a lock keeps each snapshot consistent and every read is O(1)
in the history size, so the status never blocks on a download.

The recent history is also kept in the state dir (``hot-update-history.json``)
and read back at start, so ``GET /hot-update`` after a plugin restart shows
the same history as before, whatever the store keeps (the result ConfigMap
and the pod annotation keep only the latest result). Saving it is best
effort: a full state dir costs the history file, never an update.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kidecar_supervisor.plugin_api import ResultRecord
from kidecar_supervisor.plugin_kit.durable_files import atomic_write_json
from workers.hot_update.download import Progress
from workers.hot_update.url_redaction import redact

log = logging.getLogger("kidecar.hot_update.status")

HISTORY_SIZE = 20

IDLE = "idle"
DOWNLOADING = "downloading"
RELOADING = "reloading"
FAILED = "failed"

#: the stages of one update (DESIGN §9), then its outcome; ``idle`` before any update
#: and after one that failed before touching fileDir (download, checksum, ...)
VERIFYING = "verifying"
INSTALLING = "installing"
CONFIRMING = "confirming"
SUCCEEDED = "succeeded"
ROLLED_BACK = "rolledBack"
STAGES = (IDLE, DOWNLOADING, VERIFYING, INSTALLING, RELOADING, CONFIRMING, SUCCEEDED,
          ROLLED_BACK, FAILED)


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

    def __init__(self, history_path: Path | None = None) -> None:
        self._lock = threading.Lock()
        self.applied: Applied | None = None
        self.state = IDLE
        self.stage = IDLE
        self._started = 0.0
        self.running: dict[str, Any] | None = None
        self.progress: Progress | None = None
        self.last_error: dict[str, Any] | None = None
        self.restore: dict[str, Any] = {"state": "pending"}
        self._history_path = history_path
        self.history: deque[dict[str, Any]] = deque(_load_history(history_path),
                                                    maxlen=HISTORY_SIZE)

    def start(self, version: str, url: str, restoring: bool) -> Progress:
        progress = Progress()
        with self._lock:
            self.state = DOWNLOADING
            self.stage = DOWNLOADING
            self._started = time.monotonic()
            self.running = {"version": version, "url": url, "restoring": restoring,
                            "startedAt": time.time()}
            self.progress = progress
        return progress

    def set_state(self, state: str) -> None:
        with self._lock:
            self.state = state

    def set_stage(self, stage: str, **running: Any) -> None:
        """The running update moved on (``state`` keeps its coarser seed-era values)."""
        with self._lock:
            self.stage = stage
            if stage in (INSTALLING, RELOADING, CONFIRMING):
                self.state = RELOADING
                self.progress = None
            if self.running is not None:
                self.running.update(running)

    def set_outcome(self, stage: str) -> None:
        """How the last update ended: succeeded, rolledBack, failed, or idle (nothing changed)."""
        with self._lock:
            self.stage = stage

    def succeeded(self, applied: Applied, record: ResultRecord) -> None:
        with self._lock:
            self.applied = applied
            self.state = IDLE
            self.stage = SUCCEEDED
            self.running = None
            self.progress = None
            self.last_error = None
            self.history.appendleft(record.to_dict())
            self._save_history()

    def failed(self, record: ResultRecord | None, error: dict[str, Any]) -> None:
        with self._lock:
            self.state = FAILED
            self.running = None
            self.progress = None
            self.last_error = error
            if record is not None:
                self.history.appendleft(record.to_dict())
                self._save_history()

    def set_applied(self, applied: Applied | None) -> None:
        with self._lock:
            self.applied = applied

    def carried(self) -> dict[str, Any]:
        """What ``GET /hot-update`` shows that lives in memory only: handed to the next
        process of a recycle (``take_over``), so the recycle does not show."""
        with self._lock:
            return {"state": self.state, "stage": self.stage, "lastError": self.last_error,
                    "restore": dict(self.restore)}

    def take_over(self, carried: dict[str, Any]) -> None:
        with self._lock:
            self.state = str(carried["state"])
            self.stage = str(carried["stage"])
            self.last_error = carried.get("lastError") or None
            self.restore = dict(carried["restore"])

    def set_restore(self, **info: Any) -> None:
        with self._lock:
            self.restore = info

    def seed_history(self, records: list[ResultRecord]) -> None:
        """Add what the store already knows, oldest last, without duplicates."""
        with self._lock:
            known = {(h["version"], h["timestamp"]) for h in self.history}
            for record in records:
                if (record.version, record.timestamp) not in known:
                    self.history.append({**record.to_dict(), "url": redact(record.url)})
            ordered = sorted(self.history, key=lambda h: h["timestamp"], reverse=True)
            self.history = deque(ordered, maxlen=HISTORY_SIZE)
            self._save_history()

    def _save_history(self) -> None:
        """Caller holds the lock; a failure (a full state dir) is a warning, nothing more."""
        if self._history_path is None:
            return
        try:
            atomic_write_json(self._history_path, list(self.history))
        except OSError as exc:
            log.warning("cannot save the hot update history to %s: %s", self._history_path,
                        exc.strerror or exc)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            applied = self.applied
            progress = None
            if self.progress is not None:
                total = self.progress.total
                done = self.progress.done
                elapsed = time.monotonic() - self._started
                progress = {"bytes": done, "total": total,
                            "percent": round(100.0 * done / total, 1) if total else None,
                            "rate": round(done / elapsed) if elapsed > 0 else 0}
            return {
                "version": applied.version if applied else "",
                "url": applied.url if applied else "",
                "file": applied.file_name if applied else "",
                "sha256": applied.sha256 if applied else "",
                "appliedAt": applied.since if applied else None,
                "state": self.state,
                "stage": self.stage,
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
                "stage": self.stage,
            }
            if self.progress is not None:
                out["bytes"] = self.progress.done
            if self.last_error:
                out["lastError"] = self.last_error.get("error", "")
            return out


def _load_history(path: Path | None) -> list[dict[str, Any]]:
    """The saved history, newest first; [] if there is none or it does not parse."""
    if path is None:
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("ignoring an unreadable hot update history %s: %s", path, exc)
        return []
    if not isinstance(data, list):
        return []
    # a history of kidecar <= 0.2 may hold URLs with their credentials: never shown
    return [{**h, "url": redact(str(h.get("url", "")))} for h in data
            if isinstance(h, dict) and {"version", "timestamp"} <= h.keys()]
