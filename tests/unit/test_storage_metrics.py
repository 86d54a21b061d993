"""The storage process publishes its Kubernetes write journal's numbers as gauges."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from kidecar_supervisor.storage.base import StorageConfig
from kidecar_supervisor.storage.journal import Journal, JournalLimits
from kidecar_supervisor.storage.service import StorageService


class _Ctx:
    def __init__(self) -> None:
        self.gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.stop_requested = threading.Event()

    def set_gauge(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        self.gauges[(name, tuple(sorted((labels or {}).items())))] = value


class _JournalStore:
    """Stands in for an InKubeStore: the journal's real numbers, Events off."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def stats(self) -> dict[str, Any]:
        return {**self.journal.stats(), "eventsOff": True}


def test_pending_age_failed_dropped_and_events_off_are_published(tmp_path: Path) -> None:
    now = [100.0]
    journal = Journal(tmp_path, JournalLimits(max_entries=3, max_bytes=10**9),
                      clock=lambda: now[0])
    first = journal.append({"op": "result", "parts": ["pod"]})
    for n in range(4):
        journal.append({"op": "event", "n": n, "parts": ["event"]})
    journal.fail(first, "pod: 404", "pod: 404")
    now[0] += 7
    service = StorageService()
    ctx = _Ctx()
    service.init(ctx)  # type: ignore[arg-type]
    service._stores[StorageConfig(type="InKube")] = _JournalStore(journal)  # type: ignore[assignment]
    service.publish_metrics()
    g = ctx.gauges
    assert g[("kidecar_storage_journal_pending_entries", ())] == 2.0
    assert g[("kidecar_storage_journal_oldest_pending_seconds", ())] == 7.0
    assert g[("kidecar_storage_journal_failed_entries", ())] == 1.0
    assert g[("kidecar_storage_journal_dropped_entries", (("kind", "event"),))] == 2.0
    assert g[("kidecar_storage_journal_dropped_entries", (("kind", "result"),))] == 0.0
    assert g[("kidecar_storage_events_off", ())] == 1.0
