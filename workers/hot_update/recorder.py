"""Recording results in the store, and keeping a result that could not be stored visible.

A full state dir, a broken database, an API server that refuses the result
ConfigMap: the update itself still happened, so a store failure never turns
success into failure. But it must not be silent either (issue 17, findings 4
and 9). Every answer says which parts were recorded (``recordedParts``:
``pod`` annotation, ``store`` = the result ConfigMap or the local database,
``event``); a result the store did not take at all is logged as an error,
counted on ``/metrics`` (``kidecar_hot_update_unrecorded_results``), listed
by ``GET /hot-update`` under ``unrecorded`` and retried in the background
until the store takes it (a full disk gets space again, the database is
replaced). Parts the API refused for good are not retried: the same request
would be refused again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kidecar_supervisor.plugin_api import (
    JOURNALED,
    WRITTEN,
    ResultRecord,
    ResultStore,
    recorded_parts,
)

log = logging.getLogger("kidecar.hot_update.recorder")

#: results kept for a retry; beyond that the oldest are dropped (with an error log)
MAX_PENDING = 20
UNRECORDED_GAUGE = "kidecar_hot_update_unrecorded_results"


@dataclass(frozen=True)
class Recorded:
    """What became of one result: ``summary`` for humans, ``parts`` for machines."""

    summary: str
    parts: dict[str, bool]

    def fields(self) -> dict[str, Any]:
        """The reply fields: ``recorded`` (written, journaled, partial or "not recorded:
        <why>") and ``recordedParts``."""
        return {"recorded": self.summary, "recordedParts": dict(self.parts)}


class ResultRecorder:
    """The plugin's one way into the result store. Thread-safe."""

    def __init__(self, store: ResultStore, store_type: str,
                 set_gauge: Callable[[str, float], None]) -> None:
        self.store = store
        self.store_type = store_type
        self._set_gauge = set_gauge
        self._lock = threading.Lock()
        self._pending: list[tuple[ResultRecord, str]] = []
        self._set_gauge(UNRECORDED_GAUGE, 0.0)

    def record(self, record: ResultRecord) -> Recorded:
        """Store ``record``; on failure keep it for ``retry_pending`` and say so."""
        try:
            outcome = self.store.record_result(record)
        except Exception as exc:  # the store's failure is reported, never raised
            error = _short(exc)
            log.error("cannot record the hot update result for %s (it is kept and retried; "
                      "GET /hot-update lists it under unrecorded): %s", record.version, error,
                      extra={"version": record.version, "success": record.success})
            self._keep(record, error)
            return Recorded(f"not recorded: {error}", recorded_parts(error, self.store_type))
        parts = recorded_parts(outcome, self.store_type)
        if outcome in (WRITTEN, JOURNALED):
            return Recorded(outcome, parts)
        missing = sorted(name for name, done in parts.items() if not done)
        log.error("the hot update result for %s was recorded only in part: %s not recorded "
                  "(%s)", record.version, ", ".join(missing), outcome,
                  extra={"version": record.version, "recordedParts": parts})
        return Recorded("partial", parts)

    def retry_pending(self) -> None:
        """Try the kept results again, oldest first; stop at the first the store refuses."""
        while True:
            with self._lock:
                if not self._pending:
                    return
                record = self._pending[0][0]
            try:
                self.store.record_result(record)
            except Exception as exc:
                with self._lock:
                    if self._pending and self._pending[0][0] is record:
                        self._pending[0] = (record, _short(exc))
                return
            log.info("the kept hot update result for %s is recorded now", record.version)
            with self._lock:
                if self._pending and self._pending[0][0] is record:
                    self._pending.pop(0)
                self._publish()

    def unrecorded(self) -> list[dict[str, Any]]:
        """For ``GET /hot-update``: the results the store has not taken yet, oldest first."""
        with self._lock:
            return [{"version": r.version, "url": r.url, "success": r.success,
                     "at": r.timestamp, "error": error} for r, error in self._pending]

    def _keep(self, record: ResultRecord, error: str) -> None:
        with self._lock:
            self._pending.append((record, error))
            if len(self._pending) > MAX_PENDING:
                dropped, _ = self._pending.pop(0)
                log.error("dropping the unrecorded result for %s: more than %d results wait "
                          "for the store", dropped.version, MAX_PENDING)
            self._publish()

    def _publish(self) -> None:
        """Caller holds the lock."""
        self._set_gauge(UNRECORDED_GAUGE, float(len(self._pending)))


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
