"""After a settled update hot_update's process is replaced by a fresh one (issue 16).

The update path touches ~4 MiB of pages the plugin shares with the supervisor;
a fresh fork gives them back (docs/footprint.md). The replacement must be
invisible to users: no second download, no second reload or result, the
applied version and the stage histogram carry on, /readyz stays 200, a call
sent meanwhile is answered, and it is not counted as a restart.

Likewise requests (an HTTP client of ~100 modules) is imported by the
hot_update process when it downloads, never by the supervisor before it forks:
so the recycle gives its pages back too, and an idle tree holds none of them;
urllib3 only by the processes that use it (the store, a download).
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.fake_game import FakeGame
from tests.support.hot_update_harness import signal_config, wait_until
from tests.support.sidecar_process import Sidecar, start_sidecar
from tests.support.upstream_server import UpstreamServer

OLD = b"<h1>version 1</h1>\n"
NEW = b"<h1>version 2</h1>\n"
NEWER = b"<h1>version 3</h1>\n"
DOWNLOADS = 'kidecar_hot_update_stage_duration_seconds_count{plugin="hot_update",stage="downloading"}'


def _row(sidecar: Sidecar) -> dict[str, Any]:
    return next(r for r in sidecar.get("/plugins").json() if r["name"] == "hot_update")


def _metric(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_a_settled_update_recycles_the_process_and_nothing_else_changes(
        tmp_path: Path, file_dir: Path, upstream: UpstreamServer, game: FakeGame) -> None:
    url = upstream.add_file("index.html", NEW)
    config = {"plugins": [{"name": "hot_update", "config": signal_config(file_dir, game.tag)}]}
    sidecar = start_sidecar(config, tmp_path, wait_ready=True)
    unready: list[int] = []
    watching = threading.Event()

    def watch_readiness() -> None:
        while not watching.is_set():
            status = sidecar.get("/readyz", timeout=10).status_code
            if status != 200:
                unready.append(status)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch_readiness, daemon=True)
    try:
        before = _row(sidecar)
        watcher.start()
        answer = sidecar.post("/hot-update", data={"version": "v2", "url": url}, timeout=60)
        assert answer.status_code == 200 and answer.json()["status"] == "updated", answer.text
        # a call right behind the update: answered by whichever process runs by then
        assert sidecar.get("/hot-update", timeout=30).json()["version"] == "v2"
        wait_until(lambda: _row(sidecar)["recycles"] == 1, what="hot_update recycled")
        wait_until(lambda: _row(sidecar)["ready"], what="the fresh hot_update ready")
        watching.set()
        watcher.join(10)
        after = _row(sidecar)
        assert after["pid"] != before["pid"] and after["state"] == "Running"
        assert after["restarts"] == 0, "a recycle is no restart"
        assert not unready, f"/readyz answered {unready} during the recycle"
        state = sidecar.get("/hot-update").json()
        assert state["version"] == "v2" and state["state"] == "idle", state
        assert upstream.count("/files/index.html") == 1, "the fresh process downloads nothing"
        metrics = sidecar.get("/metrics").text
        assert 'kidecar_plugin_recycles_total{plugin="hot_update"} 1.0' in metrics
        counts = _metric(metrics, DOWNLOADS)
        assert counts and counts[0].endswith(" 1.0"), counts  # carried over, not reset
        assert _metric(metrics, 'kidecar_hot_update_info{plugin="hot_update",version="v2"} 1.0')
        # the next update runs in the fresh process, and is recycled in its turn
        newer = upstream.add_file("v3.html", NEWER)
        again = sidecar.post("/hot-update", data={"version": "v3", "url": newer}, timeout=60)
        assert again.status_code == 200, again.text
        wait_until(lambda: _row(sidecar)["recycles"] == 2, what="the second recycle")
        counts = _metric(sidecar.get("/metrics").text, DOWNLOADS)
        assert counts and counts[0].endswith(" 2.0"), counts
    finally:
        watching.set()
        assert sidecar.stop() == 0
    assert (file_dir / "v3.html").read_bytes() == NEWER
    game.wait_for(lambda r: r["hups"] == 2)  # one reload per update, none for a recycle


def test_recycle_after_update_can_be_switched_off(
        tmp_path: Path, file_dir: Path, upstream: UpstreamServer, game: FakeGame) -> None:
    url = upstream.add_file("index.html", NEW)
    hot_update = signal_config(file_dir, game.tag, recycleAfterUpdate=False)
    sidecar = start_sidecar({"plugins": [{"name": "hot_update", "config": hot_update}]},
                            tmp_path, wait_ready=True)
    try:
        pid = _row(sidecar)["pid"]
        answer = sidecar.post("/hot-update", data={"version": "v2", "url": url}, timeout=60)
        assert answer.status_code == 200, answer.text
        time.sleep(1.5)
        row = _row(sidecar)
        assert row["pid"] == pid and row["recycles"] == 0
    finally:
        assert sidecar.stop() == 0


def test_a_failed_update_is_recycled_and_its_status_carries_over(
        tmp_path: Path, file_dir: Path, upstream: UpstreamServer, game: FakeGame) -> None:
    """The fresh process shows what the last one did: failed, the error, the restore."""
    url = upstream.add_file("index.html", NEW)
    nobody = signal_config(file_dir, "no-such-game-process")
    sidecar = start_sidecar({"plugins": [{"name": "hot_update", "config": nobody}]},
                            tmp_path, wait_ready=True)
    try:
        restore = sidecar.get("/hot-update").json()["restore"]
        answer = sidecar.post("/hot-update", data={"version": "v2", "url": url}, timeout=60)
        assert answer.status_code == 424 and "process not found" in answer.json()["error"]
        wait_until(lambda: _row(sidecar)["recycles"] == 1, what="hot_update recycled")
        wait_until(lambda: _row(sidecar)["ready"], what="the fresh hot_update ready")
        state = sidecar.get("/hot-update").json()
        assert state["state"] == "failed" and state["restore"] == restore, state
        assert "process not found" in state["lastError"]["error"], state
        assert state["history"][0]["version"] == "v2" and not state["history"][0]["success"]
        assert (file_dir / "index.html").read_bytes() == OLD
        assert not (tmp_path / "state" / "hot-update-handover.json").exists()
    finally:
        assert sidecar.stop() == 0


def _start_ticks(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[19])


def test_a_restart_that_is_no_recycle_restores_whatever_was_handed_over(
        tmp_path: Path, file_dir: Path, upstream: UpstreamServer, game: FakeGame) -> None:
    """A handover left behind (a recycle the supervisor declined) is not taken by a
    crash or an operator's restart: those restore from disk and the store."""
    url = upstream.add_file("index.html", NEW)
    hot_update = signal_config(file_dir, game.tag, recycleAfterUpdate=False)
    sidecar = start_sidecar({"plugins": [{"name": "hot_update", "config": hot_update}]},
                            tmp_path, wait_ready=True)
    try:
        answer = sidecar.post("/hot-update", data={"version": "v2", "url": url}, timeout=60)
        assert answer.status_code == 200, answer.text
        handover = tmp_path / "state" / "hot-update-handover.json"
        handover.write_text(json.dumps({
            "supervisor": [sidecar.proc.pid, _start_ticks(sidecar.proc.pid)],
            "at": time.monotonic(),
            "status": {"state": "failed", "stage": "rolledBack", "lastError": {"error": "x"},
                       "restore": {"state": "handed-over"}}}))
        assert sidecar.post("/plugins/hot_update/restart").status_code == 200
        wait_until(lambda: _row(sidecar)["restarts"] == 1 and _row(sidecar)["ready"],
                   what="hot_update restarted")
        state = sidecar.get("/hot-update").json()
        assert state["restore"]["state"] != "handed-over" and state["state"] == "idle", state
        assert state["version"] == "v2"
        assert not handover.exists()
    finally:
        assert sidecar.stop() == 0


def _imports_of(text: str, module: str) -> int:
    """How many processes imported ``module``, from ``PYTHONPROFILEIMPORTTIME``'s lines."""
    return len(re.findall(rf"^import time:.*\|\s+{re.escape(module)}$", text, re.MULTILINE))


def test_http_clients_are_imported_where_they_are_used_not_before_the_fork(
        tmp_path: Path, file_dir: Path, upstream: UpstreamServer, game: FakeGame) -> None:
    url = upstream.add_file("index.html", NEW)
    config = {"plugins": [{"name": "hot_update", "config": signal_config(file_dir, game.tag)}]}
    # every process of the tree reports each module it imports, on the shared log
    sidecar = start_sidecar(config, tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1"},
                            wait_ready=True)
    try:
        booted = sidecar.log_path.read_text(errors="replace")
        before_fork = booted.split(" starting (", 1)[0]  # the supervisor's "kidecar ... starting"
        assert _imports_of(before_fork, "kidecar_supervisor.supervisor") == 1  # the probe works
        assert _imports_of(before_fork, "urllib3") == 0, "urllib3 imported before the fork"
        assert _imports_of(booted, "requests") == 0, "requests imported at boot, by some process"
        answer = sidecar.post("/hot-update", data={"version": "v2", "url": url}, timeout=60)
        assert answer.status_code == 200, answer.text
        wait_until(lambda: _row(sidecar)["recycles"] == 1 and _row(sidecar)["ready"],
                   what="hot_update recycled")
        log = sidecar.log_path.read_text(errors="replace")
        assert _imports_of(log, "requests") == 1  # by the download, once
    finally:
        assert sidecar.stop() == 0
