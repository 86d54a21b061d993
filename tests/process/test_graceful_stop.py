"""Shutdown and restarts drop no work (issue 17, finding 8).

SIGTERM during a long hot update: the client still gets an answer and kidecar is
gone within one grace period that fits the kubelet's default 30 s (before: 20.8 s
of HTTP grace and plugin grace one after the other, and the client dropped).
``POST /plugins/http/restart`` with a request in flight: the new HTTP worker
serves before the old one stops, so that request is answered and ``/healthz``
never goes down (before: the client dropped, /healthz down ~10 s).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from tests.support.sidecar_process import Sidecar, start_sidecar
from tests.support.upstream_server import UpstreamServer

pytestmark = pytest.mark.slow

#: the kubelet's default terminationGracePeriodSeconds
KUBELET_GRACE = 30.0


@pytest.fixture
def game(tmp_path: Path) -> Iterator[str]:
    marker = f"fake-game-{tmp_path.name}"
    proc = subprocess.Popen(["sh", "-c", "trap '' HUP; sleep 300", marker])
    yield marker
    proc.kill()
    proc.wait()


def _config(tmp_path: Path, game: str) -> dict[str, Any]:
    return {"plugins": [
        {"name": "hot_update", "config": {
            "fileDir": str(tmp_path / "shared"), "loadPatchType": "signal",
            "signal": {"processName": game, "signalName": "SIGHUP"},
            "storageConfig": {"type": "Local"}}},
        {"name": "test_sleeper"},
    ]}


class Background:
    """One request in a thread; its response (or exception) afterwards."""

    def __init__(self, call: Any) -> None:
        self.result: Any = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Any) -> None:
        try:
            self.result = call()
        except Exception as exc:  # noqa: BLE001 - the test inspects what happened
            self.result = exc

    def join(self, timeout: float) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the request is still waiting"
        return self.result


def _downloading(sidecar: Sidecar) -> None:
    sidecar.wait_for(lambda: sidecar.get("/hot-update").json().get("state") == "downloading",
                     what="the download running")


def test_sigterm_answers_the_request_in_flight_and_exits_within_one_grace(
        tmp_path: Path, game: str) -> None:
    with UpstreamServer() as upstream:
        sidecar = start_sidecar(_config(tmp_path, game), tmp_path, wait_ready=True)
        try:
            # announces 1 MB, sends 1 KB, then nothing for 120 s: a download that
            # would outlive any grace period
            url = upstream.url("/stall/game.cfg?after=1024&length=1048576")
            post = Background(lambda: sidecar.post(
                "/hot-update", data={"version": "v2", "url": url}, timeout=60))
            _downloading(sidecar)
            began = time.monotonic()
            code = sidecar.stop(timeout=KUBELET_GRACE + 10)
            took = time.monotonic() - began
            answer = post.join(10)
        finally:
            sidecar.stop()
    assert isinstance(answer, requests.Response), f"the client was dropped: {answer!r}"
    assert "error" in answer.json() or "version" in answer.json(), answer.text
    assert code == 0
    assert took < KUBELET_GRACE, f"shutdown took {took:.1f}s\n{sidecar.log()}"
    assert sidecar.alive_leftovers() == []


def test_restart_of_http_answers_the_request_in_flight_and_keeps_health_up(
        tmp_path: Path, game: str) -> None:
    with UpstreamServer() as upstream:
        sidecar = start_sidecar(_config(tmp_path, game), tmp_path, wait_ready=True)
        try:
            url = upstream.url("/slow/game.cfg?size=60000&rate=10000")  # ~6 s
            post = Background(lambda: sidecar.post(
                "/hot-update", data={"version": "v3", "url": url}, timeout=60))
            _downloading(sidecar)
            old = sidecar.plugin("http")
            failures: list[str] = []
            answered = 0
            stop = threading.Event()

            def probe() -> None:
                nonlocal answered
                while not stop.is_set():
                    try:
                        # 5 s: margin for a loaded machine; without the overlap nobody
                        # accepted for ~10 s (the old worker's graceful stop, then boot)
                        status = requests.get(f"{sidecar.url}/healthz", timeout=5,
                                              headers={"Connection": "close"}).status_code
                        if status != 200:
                            failures.append(f"HTTP {status}")
                    except requests.RequestException as exc:
                        failures.append(f"{type(exc).__name__}: {exc}")
                    answered += 1
                    stop.wait(0.05)

            prober = threading.Thread(target=probe, daemon=True)
            prober.start()
            try:
                restart = sidecar.post("/plugins/http/restart")
                assert restart.status_code == 200, restart.text
                new = sidecar.wait_for(
                    lambda: (p := sidecar.plugin("http"))["pid"] not in (None, old["pid"])
                    and p["ready"] and p, timeout=30, what="the new HTTP worker serving")
                answer = post.join(30)
                sidecar.wait_for(lambda: not psutil.pid_exists(old["pid"])
                                 or psutil.Process(old["pid"]).status() == psutil.STATUS_ZOMBIE,
                                 timeout=30, what="the old HTTP worker gone")
                time.sleep(0.5)
            finally:
                stop.set()
                prober.join(10)
            assert isinstance(answer, requests.Response), f"the client was dropped: {answer!r}"
            assert answer.status_code == 200, answer.text
            assert answer.json()["version"] == "v3"
            assert failures == [], failures[:5]
            assert answered >= 20
            assert new["restarts"] == old["restarts"] + 1
            assert sidecar.get("/plugins/http").json()["state"] == "Running"
            assert sidecar.get("/readyz").status_code == 200
        finally:
            sidecar.stop()
            assert sidecar.alive_leftovers() == []
