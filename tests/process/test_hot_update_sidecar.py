"""hot_update through the running sidecar (``kidecar run``): the seed's curl, JSON, GET /hot-update.

Everything is real: the sidecar process tree, HTTP on a loopback port, the
upstream HTTP server, a game process receiving SIGHUP.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.fake_game import FakeGame
from tests.support.sidecar_process import Sidecar, start_sidecar
from tests.support.upstream_server import UpstreamServer

pytestmark = pytest.mark.slow

OLD = b"image default\n"
NEW = b"hot update v2\n"


def config(file_dir: Path, process_name: str, **extra: Any) -> dict[str, Any]:
    return {"plugins": [{"name": "hot_update", "config": {
        "loadPatchType": "signal",
        "signal": {"processName": process_name, "signalName": "SIGHUP"},
        "fileDir": str(file_dir), "storageConfig": {"type": "Local"}, **extra}}]}



@pytest.fixture
def sidecar(tmp_path: Path, file_dir: Path, game: FakeGame) -> Iterator[Sidecar]:
    running = start_sidecar(config(file_dir, game.tag), tmp_path, wait_ready=True)
    yield running
    assert running.stop() == 0
    assert running.alive_leftovers() == []


def test_seed_curl_json_and_status(sidecar: Sidecar, upstream: UpstreamServer,
                                   file_dir: Path, game: FakeGame) -> None:
    url = upstream.add_file("index.html", NEW)
    # exactly the seed's form: curl -X POST .../hot-update -d 'version=v2&url=...'
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-X", "POST",
                          f"{sidecar.url}/hot-update", "-d", f"version=v2&url={url}"],
                         capture_output=True, text=True, check=True, timeout=60)
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "200", out.stdout
    assert json.loads(body)["status"] == "updated"
    report = game.wait_for(lambda r: r["hups"] == 1)
    assert report["content"] == NEW.decode()

    status = sidecar.get("/hot-update").json()
    assert (status["version"], status["url"], status["state"]) == ("v2", url, "idle")
    assert status["history"][0]["version"] == "v2" and status["history"][0]["success"]

    again = sidecar.post("/hot-update", json={"version": "v2", "url": url})
    assert again.status_code == 200 and again.json()["status"] == "unchanged"
    assert upstream.count("/files/index.html") == 1

    bad = sidecar.post("/hot-update", json={"version": "v2..", "url": url})
    assert bad.status_code == 400 and "is malformed" in bad.json()["error"]
    missing = sidecar.post("/hot-update", data={"url": url})
    assert missing.status_code == 400 and "version is required" in missing.json()["error"]
    gone = sidecar.post("/hot-update", json={"version": "v3",
                                             "url": upstream.url("status/404/index.html")})
    assert gone.status_code == 502, gone.text
    assert gone.json()["upstreamStatus"] == 404 and "answered 404" in gone.json()["error"]
    assert (file_dir / "index.html").read_bytes() == NEW
    assert sidecar.get("/hot-update").json()["state"] == "failed"
    assert sidecar.get("/healthz").status_code == 200


def test_conflict_and_health_during_a_long_download(sidecar: Sidecar, upstream: UpstreamServer,
                                                    file_dir: Path) -> None:
    size = 3_000_000
    slow = upstream.url(f"slow/big.bin?size={size}&rate=1000000")
    first: dict[str, Any] = {}

    def post() -> None:
        first["response"] = sidecar.post("/hot-update", data={"version": "v4", "url": slow},
                                         timeout=60)

    worker = threading.Thread(target=post)
    worker.start()
    status = sidecar.wait_for(lambda: (s := sidecar.get("/hot-update").json())["progress"]
                              and s["progress"]["bytes"] > 0 and s, what="download progress")
    assert status["state"] == "downloading" and status["progress"]["total"] == size
    conflict = sidecar.post("/hot-update", data={"version": "v5",
                                                 "url": upstream.add_file("x.html", NEW)})
    assert conflict.status_code == 409, conflict.text
    assert "already running" in conflict.json()["error"]
    for _ in range(10):  # the sidecar stays healthy and fast while it downloads
        started = time.monotonic()
        assert sidecar.get("/healthz", timeout=2).status_code == 200
        assert time.monotonic() - started < 1.0
    worker.join(60)
    assert first["response"].status_code == 200, first["response"].text
    assert (file_dir / "big.bin").stat().st_size == size


def test_restart_restores_before_readyz(tmp_path: Path, upstream: UpstreamServer,
                                        file_dir: Path, game: FakeGame) -> None:
    url = upstream.add_file("index.html", NEW * 40_000)  # 560 kB
    first = start_sidecar(config(file_dir, game.tag), tmp_path, wait_ready=True)
    try:
        assert first.post("/hot-update", data={"version": "v2", "url": url}).status_code == 200
    finally:
        assert first.stop() == 0
    for entry in file_dir.iterdir():  # a new container whose emptyDir content is gone
        entry.unlink()
    # and without the kept copies (a state dir that was not a volume): the restore
    # downloads again, so readiness has something to wait for
    shutil.rmtree(tmp_path / "state" / "hot-update-kept")
    (file_dir / "index.html").write_bytes(OLD)
    upstream.throttle = 300_000  # the restore takes about 2 s
    second = start_sidecar(config(file_dir, game.tag), tmp_path, wait_ready=False)
    try:
        seen = []
        while True:
            code = second.get("/readyz", timeout=5).status_code
            seen.append(code)
            if code == 200:
                break
            assert code == 503
            time.sleep(0.05)
        assert (file_dir / "index.html").read_bytes() == NEW * 40_000
        assert 503 in seen, "readiness must wait for the restore"
        status = second.get("/hot-update").json()
        assert status["version"] == "v2" and status["restore"]["state"] == "applied"
        game.wait_for(lambda r: r["hups"] == 2)
    finally:
        assert second.stop() == 0


def test_process_name_matching_the_sidecar_itself_signals_nothing(
        tmp_path: Path, upstream: UpstreamServer, file_dir: Path) -> None:
    """Its HTTP child (with the store) carries the sidecar's command line: never a target."""
    # the config path is unique to this test: other sidecars on the machine never match
    own_config = str(tmp_path / "kidecar.yaml")
    # pids must not change: hot_update is not recycled after its update here
    sidecar = start_sidecar(config(file_dir, own_config, recycleAfterUpdate=False), tmp_path,
                            wait_ready=True)
    assert own_config in " ".join(psutil.Process(sidecar.proc.pid).cmdline())
    try:
        before = {p["name"]: (p["pid"], p["restarts"])
                  for p in sidecar.get("/plugins").json()}
        reply = sidecar.post("/hot-update", data={"version": "v2",
                                                  "url": upstream.add_file("index.html", NEW)})
        assert reply.status_code == 424, reply.text
        assert "process not found" in reply.json()["error"]
        time.sleep(1.0)
        after = {p["name"]: (p["pid"], p["restarts"]) for p in sidecar.get("/plugins").json()}
        assert after == before
        assert sidecar.get("/healthz").status_code == 200
        assert (file_dir / "index.html").read_bytes() == OLD
    finally:
        assert sidecar.stop() == 0


def test_plugin_memory_stays_flat_for_a_large_update(
        tmp_path: Path, file_dir: Path, game: FakeGame, upstream: UpstreamServer) -> None:
    # the peak is read from the process that downloaded: not recycled after its update
    sidecar = start_sidecar(config(file_dir, game.tag, recycleAfterUpdate=False), tmp_path,
                            wait_ready=True)
    try:
        pid = sidecar.plugin("hot_update")["pid"]
        before_kib = _status_kib(pid, "VmRSS")
        size = 256 << 20
        reply = sidecar.post("/hot-update", timeout=300, data={
            "version": "v9", "url": upstream.url(f"huge/big.bin?size={size}")})
        assert reply.status_code == 200 and reply.json()["bytes"] == size, reply.text
        growth_mib = (_status_kib(pid, "VmHWM") - before_kib) / 1024
        assert growth_mib <= 16, f"plugin peak RSS grew {growth_mib:.1f} MiB for a 256 MiB update"
    finally:
        assert sidecar.stop() == 0


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_status_before_any_update(sidecar: Sidecar) -> None:
    """GET /hot-update answers before any update: an empty state, not an error."""
    status = sidecar.get("/hot-update").json()
    assert status["version"] == "" and status["state"] == "idle"
    assert status["restore"]["state"] == "nothing-recorded"
    assert sidecar.get("/readyz").status_code == 200
