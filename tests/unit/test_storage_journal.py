"""The journal's bounds, its failed/ records and the hand-over between two instances."""

from __future__ import annotations

import logging
from pathlib import Path

from kidecar_supervisor.storage.journal import Journal, JournalLimits


def _event(n: int) -> dict:
    return {"op": "event", "reason": f"R{n}", "message": "m", "parts": ["event"]}


def _result(n: int) -> dict:
    return {"op": "result", "record": {"version": f"v{n}"}, "parts": ["pod", "configmap"]}


def _markers(n: int) -> dict:
    return {"op": "markers", "labels": {"n": str(n)}, "parts": ["pod", "target"]}


def test_past_the_count_cap_events_go_first_then_markers_results_last(tmp_path, caplog):
    j = Journal(tmp_path, JournalLimits(max_entries=10, max_bytes=10**9))
    with caplog.at_level(logging.WARNING, logger="kidecar.storage.journal"):
        for n in range(4):
            j.append(_result(n))
        for n in range(4):
            j.append(_markers(n))
        for n in range(6):
            j.append(_event(n))
    kinds = [e["op"] for _, e in j.entries()]
    assert len(kinds) == 10
    assert kinds.count("result") == 4, "no result dropped while anything else was there"
    assert kinds.count("markers") == 4 and kinds.count("event") == 2
    assert [e["reason"] for _, e in j.entries() if e["op"] == "event"] == ["R4", "R5"]
    assert j.stats()["dropped"] == {"event": 4, "markers": 0, "result": 0}
    assert len([r for r in caplog.records if "dropped the oldest event" in r.getMessage()]) == 1
    for n in range(4, 12):  # nothing but results left to drop: the oldest results go
        j.append(_result(n))
    kinds = [e["op"] for _, e in j.entries()]
    assert "event" not in kinds and "markers" not in kinds
    assert [e["record"]["version"] for _, e in j.entries()] == [f"v{n}" for n in range(2, 12)]


def test_the_byte_cap_holds_too(tmp_path):
    j = Journal(tmp_path, JournalLimits(max_entries=10**6, max_bytes=64 * 1024))
    for n in range(200):
        j.append({**_event(n), "message": "x" * 1000})
    assert j.stats()["pendingBytes"] <= 64 * 1024
    assert sum(p.stat().st_size for p in tmp_path.glob("*.json")) <= 64 * 1024
    assert j.stats()["dropped"]["event"] > 100


def test_held_entries_are_never_dropped(tmp_path):
    j = Journal(tmp_path, JournalLimits(max_entries=10, max_bytes=10**9))
    held = j.append(_event(0), hold=True)
    for n in range(1, 30):
        j.append(_event(n))
    assert held in j._ids  # a writer is working on it: it is not the journal's to drop


def test_a_failure_cause_is_logged_once_and_counted(tmp_path, caplog):
    j = Journal(tmp_path)
    ids = [j.append(_result(n)) for n in range(5)]
    with caplog.at_level(logging.DEBUG, logger="kidecar.storage.journal"):
        for entry_id in ids:
            j.fail(entry_id, f"configmap: 403 forbidden (entry {entry_id})", "configmap: 403")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert j.stats()["failed"] == 5 == len(list((tmp_path / "failed").glob("*.json")))
    assert Journal(tmp_path).stats()["failed"] == 5, "counted again after a restart"


def test_oldest_pending_age(tmp_path):
    now = [1000.0]
    j = Journal(tmp_path, clock=lambda: now[0])
    assert j.stats()["oldestPendingSeconds"] == 0.0
    first = j.append(_event(1))
    now[0] += 30
    j.append(_event(2))
    now[0] += 12
    assert j.stats()["oldestPendingSeconds"] == 42.0
    j.done(first)
    assert j.stats()["oldestPendingSeconds"] == 12.0


def test_a_second_instance_waits_in_standby_then_takes_the_queue_over(tmp_path: Path):
    """Two exclusive journals on one dir (a hot upgrade): only the owner sees the queue."""
    older = Journal(tmp_path, exclusive=True)
    assert older.owner
    older.append(_result(1))
    older.append(_result(2))
    newer = Journal(tmp_path, exclusive=True)
    assert not newer.owner and newer.entries() == []  # never replays the older one's
    newer.append(_result(3))
    assert not newer.try_take_over(), "the older one still owns it"
    assert [e["record"]["version"] for _, e in older.entries()] == ["v1", "v2"]
    older.close()  # it stops (or dies: the kernel drops its flock)
    adopted: list[bool] = []
    newer.on_adopt = lambda: adopted.append(True)
    assert newer.try_take_over() and newer.owner and adopted
    assert [e["record"]["version"] for _, e in newer.entries()] == ["v1", "v2", "v3"]
    assert not list(tmp_path.glob("standby-*")), "the standby dir is gone"
    newer.close()


def test_an_orphaned_standby_dir_is_adopted_at_the_next_start(tmp_path: Path):
    owner = Journal(tmp_path, exclusive=True)
    standby = Journal(tmp_path, exclusive=True)
    standby.append(_markers(1))
    standby.close()  # the standby instance died before it could take over
    owner.close()
    again = Journal(tmp_path, exclusive=True)
    assert again.owner
    assert [e["op"] for _, e in again.entries()] == ["markers"]
    again.close()


def test_the_caps_are_configurable_under_inkube_journal() -> None:
    import pytest

    from kidecar_supervisor.config_reader import ConfigError, ConfigReader
    from kidecar_supervisor.storage.base import StorageConfig

    cfg = StorageConfig.parse(ConfigReader({"type": "InKube", "inKube": {
        "journal": {"maxEntries": 200, "maxBytes": 1048576}}}, "storageConfig"))
    assert (cfg.journal_max_entries, cfg.journal_max_bytes) == (200, 1048576)
    default = StorageConfig.parse(ConfigReader({"type": "InKube"}, "storageConfig"))
    assert (default.journal_max_entries, default.journal_max_bytes) == (
        JournalLimits().max_entries, JournalLimits().max_bytes)
    with pytest.raises(ConfigError, match="maxEntries"):
        StorageConfig.parse(ConfigReader({"type": "InKube", "inKube": {
            "journal": {"maxEntries": 0}}}, "storageConfig"))
    with pytest.raises(ConfigError, match="maxEntrys"):
        StorageConfig.parse(ConfigReader({"type": "InKube", "inKube": {
            "journal": {"maxEntrys": 10}}}, "storageConfig"))
