"""A corrupt results database is replaced at once, kept aside, logged and counted (finding 5).

Before, a truncated or garbage-headed ``results.sqlite3`` was never replaced:
every later result was 'not recorded' and every restore failed while health
stayed green.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from kidecar_supervisor.pod_identity import PodIdentity
from kidecar_supervisor.storage.base import ResultRecord, StorageConfig
from kidecar_supervisor.storage.local import LocalStore, is_corruption

POD = PodIdentity(pod_name="pod-a", namespace="default")


def _store(state: Path) -> LocalStore:
    return LocalStore(StorageConfig(), POD, state, workload="game-a")


def _events(store: LocalStore) -> list[tuple[str, str]]:
    with sqlite3.connect(store.path) as db:
        return list(db.execute("SELECT reason, message FROM events ORDER BY id"))


def _filled(state: Path, results: int = 200) -> None:
    store = _store(state)
    for n in range(results):
        store.record_result(ResultRecord(plugin="hot_update", version=f"v{n}", message="x" * 200))
    store.close()


def _assert_replaced(store: LocalStore, state: Path, original: bytes,
                     caplog: pytest.LogCaptureFixture) -> None:
    kept = sorted(state.glob("results.sqlite3.corrupt-*"))
    main = [p for p in kept if p.name.count("-") == 2 and not p.name.endswith(("-wal", "-shm"))]
    assert len(main) == 1, kept
    assert main[0].read_bytes() == original, "the bad file is kept as it was"
    assert store.corrupt_replaced == [main[0]]
    assert any(r.levelno == logging.ERROR and "corrupt" in r.getMessage()
               for r in caplog.records)
    assert [reason for reason, _ in _events(store)] == ["ResultStoreReplaced"]
    # the fresh database works: record, read back, restore finds it
    store.record_result(ResultRecord(plugin="hot_update", version="v9"))
    latest = store.latest_for_pod("hot_update")
    assert latest is not None and latest.version == "v9"


@pytest.mark.parametrize("damage", ["garbage-header", "empty", "truncated"])
def test_a_bad_database_is_moved_aside_at_start(tmp_path: Path, damage: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    _filled(state)
    path = state / "results.sqlite3"
    data = path.read_bytes()
    if damage == "garbage-header":
        path.write_bytes(b"this is not sqlite at all" + data[25:])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(data[: len(data) // 3])
    original = path.read_bytes()
    with caplog.at_level(logging.ERROR, logger="kidecar.storage.local"):
        store = _store(state)
    try:
        _assert_replaced(store, state, original, caplog)
    finally:
        store.close()


def test_corruption_while_running_is_replaced_and_the_write_still_lands(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    _filled(state)
    store = _store(state)
    try:
        store.close()  # what another writer (or a bad disk) does behind the store's back
        store.path.write_bytes(b"\x00" * 100 + store.path.read_bytes()[100:])
        for side in ("-wal", "-shm"):
            store.path.with_name(store.path.name + side).unlink(missing_ok=True)
        store._db = sqlite3.connect(store.path, check_same_thread=False, isolation_level=None)
        original = store.path.read_bytes()
        with caplog.at_level(logging.ERROR, logger="kidecar.storage.local"):
            store.record_result(ResultRecord(plugin="hot_update", version="v8"))
        latest = store.latest_for_pod("hot_update")
        assert latest is not None and latest.version == "v8"
        _assert_replaced(store, state, original, caplog)
    finally:
        store.close()


def test_a_sound_database_is_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _filled(state, results=3)
    store = _store(state)
    try:
        assert store.corrupt_replaced == [] and not list(state.glob("*.corrupt-*"))
        latest = store.latest_for_pod("hot_update")
        assert latest is not None and latest.version == "v2"
    finally:
        store.close()


def test_a_full_disk_is_not_corruption() -> None:
    assert not is_corruption(sqlite3.OperationalError("database or disk is full"))
    assert is_corruption(sqlite3.DatabaseError("database disk image is malformed"))
    assert is_corruption(sqlite3.DatabaseError("file is not a database"))
