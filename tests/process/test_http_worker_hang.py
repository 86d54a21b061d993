"""A wedged HTTP worker is found by its missing heartbeat and restarted by the
supervisor within a few seconds, without waiting for the kubelet (issue 14 §3)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import requests

from kidecar_supervisor.http_child import HEARTBEAT_TIMEOUT_SECONDS
from tests.support.sidecar_process import start_sidecar


def _config(tmp_path: Path) -> dict[str, Any]:
    file_dir = tmp_path / "www"
    file_dir.mkdir(exist_ok=True)
    return {"plugins": [{"name": "hot_update", "config": {
        "loadPatchType": "signal",
        "signal": {"processName": "no-such-game-process", "signalName": "SIGHUP"},
        "fileDir": str(file_dir), "storageConfig": {"type": "Local"}}}]}


def _healthz(url: str) -> int | None:
    try:
        return requests.get(f"{url}/healthz", timeout=1).status_code
    except requests.RequestException:
        return None


def test_a_stopped_http_worker_is_killed_and_replaced_within_seconds(tmp_path: Path) -> None:
    sidecar = start_sidecar(_config(tmp_path), tmp_path, wait_ready=True)
    try:
        old = sidecar.plugin("http")
        assert old["state"] == "Running" and old["ready"]
        # a serving worker beats: no false alarm over a few timeouts' worth of idling
        time.sleep(HEARTBEAT_TIMEOUT_SECONDS + 2)
        assert sidecar.plugin("http")["pid"] == old["pid"]

        os.kill(old["pid"], signal.SIGSTOP)  # wedged: alive, holds the socket, answers nothing
        stopped_at = time.monotonic()
        assert _healthz(sidecar.url) is None  # nobody answers on the worker's side
        sidecar.wait_for(lambda: _healthz(sidecar.url) == 200, timeout=30,
                         what="/healthz answered by a new worker")
        took = time.monotonic() - stopped_at
        new = sidecar.plugin("http")
        assert new["pid"] != old["pid"]
        assert "no heartbeat" in (new["lastError"] or ""), new
        assert not psutil.pid_exists(old["pid"]) or (
            psutil.Process(old["pid"]).status() == psutil.STATUS_ZOMBIE)
        # the kubelet's liveness probe would need periodSeconds x failureThreshold (30 s)
        assert took < 20, f"replaced after {took:.1f}s\n{sidecar.log()}"
        assert "sent no heartbeat" in sidecar.log()
    finally:
        code = sidecar.stop()
    assert code == 0
    assert sidecar.alive_leftovers() == []
