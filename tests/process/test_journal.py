"""The write-ahead journal: durable, ordered, crash-safe, never silently lossy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from kidecar_supervisor.plugin_kit.durable_files import atomic_write_json
from kidecar_supervisor.storage.journal import Journal

REPO = Path(__file__).resolve().parents[2]


def test_entries_come_back_in_order_after_reopen(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j")
    ids = [j.append({"n": n}) for n in range(5)]
    assert ids == sorted(ids)
    reopened = Journal(tmp_path / "j")
    assert [e["n"] for _, e in reopened.entries()] == [0, 1, 2, 3, 4]
    assert len(reopened) == 5
    # new ids continue after the old ones: replay order stays append order
    assert reopened.append({"n": 5}) > ids[-1]


def test_done_removes_the_file_and_release_keeps_it(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    first = j.append({"n": 1})
    j.append({"n": 2})
    assert j.claim(first) == {"n": 1}
    j.release(first)
    assert j.claim(first) == {"n": 1}, "a released entry can be claimed again"
    j.done(first)
    assert j.claim(first) is None, "a written entry is gone"
    assert [e for _, e in j.entries()] == [{"n": 2}]
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_claim_of_a_vanished_or_corrupt_entry_is_none(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    gone = j.append({"n": 1})
    bad = j.append({"n": 2})
    (tmp_path / f"{gone:016d}.json").unlink()
    (tmp_path / f"{bad:016d}.json").write_text("[1, 2]")  # JSON, but not an entry
    assert j.claim(gone) is None and j.claim(bad) is None
    assert len(j) == 0 and (tmp_path / "bad" / f"{bad:016d}.json").exists()


def test_update_persists_partial_progress(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    entry_id = j.append({"parts": ["pod", "configmap", "event"]})
    j.update(entry_id, {"parts": ["event"]})
    assert Journal(tmp_path).entries() == [(entry_id, {"parts": ["event"]})]


def _merge_markers(last: dict, new: dict) -> dict | None:
    if last.get("op") == new.get("op") == "markers":
        return {"op": "markers", "labels": {**last["labels"], **new["labels"]}}
    return None


def test_merge_folds_into_last_entry_but_never_into_a_claimed_one(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    first = j.append({"op": "markers", "labels": {"a": "1"}}, merge=_merge_markers)
    folded = j.append({"op": "markers", "labels": {"a": "2", "b": "x"}}, merge=_merge_markers)
    assert folded == first
    assert j.entries() == [(first, {"op": "markers", "labels": {"a": "2", "b": "x"}})]
    assert j.claim(first) is not None
    second = j.append({"op": "markers", "labels": {"a": "3"}}, merge=_merge_markers)
    assert second != first, "merging into the entry being replayed would lose the new value"
    j.done(first)
    assert [e["labels"] for _, e in j.entries()] == [{"a": "3"}]
    # a result is never folded into markers
    third = j.append({"op": "result"}, merge=_merge_markers)
    assert third != second and len(j) == 2


def test_corrupt_entry_is_moved_aside_with_an_error(tmp_path: Path, caplog) -> None:
    j = Journal(tmp_path)
    j.append({"n": 1})
    bad_id = j.append({"n": 2})
    j.append({"n": 3})
    (tmp_path / f"{bad_id:016d}.json").write_text("{not json")
    reopened = Journal(tmp_path)
    assert [e["n"] for _, e in reopened.entries()] == [1, 3]
    assert (tmp_path / "bad" / f"{bad_id:016d}.json").read_text() == "{not json"
    assert any("corrupt" in r.getMessage() for r in caplog.records)


def test_fail_keeps_the_entry_and_reason_out_of_the_queue(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    entry_id = j.append({"op": "result", "v": "v9"})
    assert j.claim(entry_id) is not None
    kept = j.fail(entry_id, "422 Invalid: bad label")
    assert len(j) == 0
    assert json.loads(kept.read_text()) == {"reason": "422 Invalid: bad label",
                                            "entry": {"op": "result", "v": "v9"}}


def test_leftover_temp_file_from_a_crash_is_ignored(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "0000000000000001.json", {"n": 1})
    (tmp_path / ".0000000000000002.json.tmp").write_text('{"n": 2')  # crash mid-write
    j = Journal(tmp_path)
    assert j.entries() == [(1, {"n": 1})]
    assert not list(tmp_path.glob(".*.tmp"))


def test_concurrent_appends_get_distinct_ids(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    ids: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(20):
            entry_id = j.append({"w": n, "i": i})
            with lock:
                ids.append(entry_id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 160
    assert len(Journal(tmp_path).entries()) == 160


def test_sigkill_mid_append_loses_nothing_that_was_acknowledged(tmp_path: Path) -> None:
    """A writer process killed at a random point: every id it printed is on disk, intact."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from kidecar_supervisor.storage.journal import Journal
        j = Journal(Path({str(tmp_path / "j")!r}))
        n = 0
        while True:
            entry_id = j.append({{"n": n, "pad": "x" * 4000}})
            print(entry_id, flush=True)
            n += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acknowledged: list[int] = []
    deadline = time.monotonic() + 20
    while len(acknowledged) < 50 and time.monotonic() < deadline:
        acknowledged.append(int(proc.stdout.readline()))
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()
    proc.wait()
    acknowledged += [int(x) for x in rest.split()]
    assert len(acknowledged) >= 50
    entries = dict(Journal(tmp_path / "j").entries())
    missing = [i for i in acknowledged if i not in entries]
    assert not missing
    assert all(e["pad"] == "x" * 4000 for e in entries.values())
    assert not (tmp_path / "j" / "bad").exists()


def test_held_entries_are_skipped_by_the_replayer_until_released(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    held = j.append({"op": "result", "n": 1}, hold=True)
    queued = j.append({"op": "markers", "n": 2})
    assert (len(j), j.pending()) == (2, 1)
    assert j.claim(held) is None, "a held entry belongs to its direct write"
    assert j.entries() == [(queued, {"op": "markers", "n": 2})]  # the held one is skipped
    assert j.claim(queued) == {"op": "markers", "n": 2}
    j.done(queued)
    assert j.entries() == []
    j.update(held, {"op": "result", "n": 1, "parts": ["event"]})
    j.release(held)  # the direct attempt failed: now the replayer's
    assert j.entries() == [(held, {"op": "result", "n": 1, "parts": ["event"]})]
    assert j.claim(held) == {"op": "result", "n": 1, "parts": ["event"]}
    # a process that died while holding it: the file is there at the next start
    assert Journal(tmp_path).entries() == [(held, {"op": "result", "n": 1, "parts": ["event"]})]


def test_nothing_is_merged_into_a_held_entry(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    held = j.append({"op": "markers", "labels": {"a": "1"}}, hold=True)
    other = j.append({"op": "markers", "labels": {"a": "2"}}, merge=_merge_markers)
    assert other != held and j.pending() == 1


def test_failed_records_are_never_overwritten_after_a_restart(tmp_path: Path) -> None:
    first = Journal(tmp_path)
    kept_a = first.fail(first.append({"op": "result", "v": "a"}), "refused a")
    again = Journal(tmp_path)  # the queue was empty: ids start at 1 again
    kept_b = again.fail(again.append({"op": "result", "v": "b"}), "refused b")
    assert kept_a != kept_b
    reasons = sorted(json.loads(p.read_text())["reason"]
                     for p in (tmp_path / "failed").glob("*.json"))
    assert reasons == ["refused a", "refused b"]


_OWNER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from kidecar_supervisor.storage.journal import Journal
    j = Journal(Path({dir!r}), exclusive=True)
    role = "owner" if j.owner else "standby"
    for n in {ns!r}:
        j.append({{"op": "result", "n": n, "parts": ["pod"]}})
    print(role, flush=True)
    if role == "standby":
        while not j.try_take_over():
            time.sleep(0.05)
        print(" ".join(str(e["n"]) for _, e in j.entries()), flush=True)
    sys.stdin.read()
""")


def test_sigkill_of_the_owner_hands_its_journal_to_the_standby_process(tmp_path: Path) -> None:
    """Two real processes on one journal (a hot upgrade's two containers): the older one is
    SIGKILLed right after journaling; the newer one adopts its entries, in order, after
    which the older one's entries come first and its own follow."""
    directory = tmp_path / "kube-journal"

    def start(ns: list[int]) -> subprocess.Popen[str]:
        script = _OWNER.format(repo=str(REPO), dir=str(directory), ns=ns)
        return subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)

    older = start([1, 2])
    newer = None
    try:
        assert older.stdout is not None and older.stdout.readline().strip() == "owner"
        newer = start([3])
        assert newer.stdout is not None and newer.stdout.readline().strip() == "standby"
        time.sleep(0.3)
        assert newer.poll() is None  # still waiting: the older one holds the lock
        os.kill(older.pid, signal.SIGKILL)
        older.wait(timeout=10)
        assert newer.stdout.readline().split() == ["1", "2", "3"]
        assert not list(directory.glob("standby-*"))
        probe = Journal(directory, exclusive=True)
        assert not probe.owner, "the newer one owns it now"
        probe.close()
    finally:
        for proc in (older, newer):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
