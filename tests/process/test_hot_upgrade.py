"""Zero-downtime self-upgrade (SidecarSet HotUpgrade): the listening socket moves to
the newer kidecar while a client hammers the port; no request may fail.

Two real ``kidecar run`` processes, the same port, the handoff socket in a
shared directory, ``SIDECARSET_VERSION``/``_ALT`` as OpenKruise sets them.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from tests.support.sidecar_process import KIDECAR, Sidecar, free_port, start_sidecar
from tests.support.upstream_server import UpstreamServer

pytestmark = pytest.mark.slow


class Hammer:
    """A client loop: a fresh connection per request, like a kubelet probe."""

    def __init__(self, url: str, rate: float = 150.0) -> None:
        self.url = url
        self.interval = 1.0 / rate
        self.versions: Counter[str] = Counter()
        self.failures: list[str] = []
        self.sequence: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Hammer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        deadline = time.monotonic() + 120  # bounded, whatever happens
        while not self._stop.is_set() and time.monotonic() < deadline:
            began = time.monotonic()
            try:
                response = requests.get(self.url, timeout=5, headers={"Connection": "close"})
                if response.status_code != 200:
                    self.failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
                else:
                    version = str(response.json().get("sidecarsetVersion"))
                    self.versions[version] += 1
                    if not self.sequence or self.sequence[-1] != version:
                        self.sequence.append(version)
            except requests.RequestException as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    @property
    def total(self) -> int:
        return sum(self.versions.values()) + len(self.failures)


def _env(version: int, alt: int, handoff_dir: Path) -> dict[str, str]:
    return {"SIDECARSET_VERSION": str(version), "SIDECARSET_VERSION_ALT": str(alt),
            "KIDECAR_HANDOFF_DIR": str(handoff_dir)}


def _config(shared: Path, game_marker: str) -> dict:
    return {"http": {"gracefulTimeoutSeconds": 30}, "plugins": [
        {"name": "hot_update", "stopGraceSeconds": 30, "config": {
            "fileDir": str(shared), "loadPatchType": "signal",
            "signal": {"processName": game_marker, "signalName": "SIGHUP"},
            "storageConfig": {"type": "Local"}}},
        {"name": "test_sleeper"},
    ]}


def _health(sidecar: Sidecar) -> int:
    """Ask this instance itself (its control socket), as the exec probe does."""
    env = dict(_env(sidecar.env_version, 0, Path("/tmp")))  # type: ignore[attr-defined]
    result = subprocess.run([sys.executable, "-m", "kidecar_supervisor.cli", "health",
                             "--state-dir", str(sidecar.state_dir)], env={**_os_env(), **env},
                            capture_output=True, text=True, timeout=30)
    return result.returncode


def _os_env() -> dict[str, str]:
    import os

    return dict(os.environ)


@pytest.fixture
def game(tmp_path: Path):
    marker = f"fake-game-{tmp_path.name}"
    proc = subprocess.Popen(["sh", "-c", "trap '' HUP; sleep 300", marker])
    yield marker
    proc.kill()
    proc.wait()


def test_handoff_under_load_loses_no_request(tmp_path: Path, game: str) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    handoff = tmp_path / "shm"
    port = free_port()
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    v1 = start_sidecar(_config(shared, game), tmp_path / "v1", env=_env(1, 0, handoff), port=port,
                       wait_ready=True)
    v1.env_version = 1  # type: ignore[attr-defined]
    v2: Sidecar | None = None
    try:
        with Hammer(f"{v1.url}/healthz") as hammer:
            time.sleep(1.0)
            v2 = start_sidecar(_config(shared, game), tmp_path / "v2", env=_env(2, 1, handoff),
                               port=port)
            v2.env_version = 2  # type: ignore[attr-defined]
            v2.wait_for(lambda: "drained; idle" in v1.log(), timeout=60, what="v1 idle")
            time.sleep(1.0)
        assert hammer.failures == [], hammer.failures[:5]
        assert hammer.total >= 200, hammer.versions
        assert hammer.versions["1"] > 0 and hammer.versions["2"] > 0, hammer.versions
        assert hammer.sequence[-1] == "2", hammer.sequence
        # v1 idles (it does not exit: the kubelet would restart it on the old image)
        assert v1.proc.poll() is None
        assert [c.name() for c in _children(v1)] == []
        assert _health(v1) == 0 and _health(v2) == 0
        # v2 really serves: its own plugins answer through the port
        assert requests.get(f"{v1.url}/plugins/test_sleeper", timeout=5).json()["pid"] in \
            {c.pid for c in _children(v2)}
    finally:
        for sidecar in (v2, v1):
            if sidecar is not None:
                sidecar.stop()
                assert sidecar.alive_leftovers() == []


def test_in_flight_hot_update_completes_across_the_handoff(tmp_path: Path, game: str) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    handoff = tmp_path / "shm"
    port = free_port()
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    # as in the pod: both containers mount the kidecar-state emptyDir (kidecar's own
    # files, e.g. hot_update's version marker, live there, never in fileDir)
    (tmp_path / "v2" / "state").symlink_to(tmp_path / "v1" / "state")
    with UpstreamServer() as upstream:
        v1 = start_sidecar(_config(shared, game), tmp_path / "v1", env=_env(1, 0, handoff),
                           port=port, wait_ready=True)
        v2: Sidecar | None = None
        try:
            slow = upstream.url("/slow/game.cfg?size=40000&rate=10000")  # ~4 s download
            answer: dict = {}
            post = threading.Thread(target=lambda: answer.update(
                r=requests.post(f"{v1.url}/hot-update", data={"version": "v7", "url": slow},
                                timeout=60)))
            with Hammer(f"{v1.url}/healthz") as hammer:
                post.start()
                v1.wait_for(lambda: requests.get(f"{v1.url}/hot-update", timeout=5).json()
                            .get("state") == "downloading", what="download running")
                v2 = start_sidecar(_config(shared, game), tmp_path / "v2",
                                   env=_env(2, 1, handoff), port=port)
                post.join(60)
                v2.wait_for(lambda: "drained; idle" in v1.log(), timeout=60, what="v1 idle")
            assert hammer.failures == [], hammer.failures[:5]
            response = answer["r"]
            assert response.status_code == 200, response.text
            assert response.json()["version"] == "v7"
            assert (shared / "game.cfg").stat().st_size == 40000
            # the newer instance knows v7 is applied and does not download it again
            hits = upstream.count("/slow/game.cfg")
            status = v2.wait_for(lambda: (s := requests.get(f"{v2.url}/hot-update", timeout=5)
                                          .json()).get("version") == "v7" and s,
                                 what="v2 knows v7")
            assert status["version"] == "v7"
            again = requests.post(f"{v2.url}/hot-update", data={"version": "v7", "url": slow},
                                  timeout=30)
            assert again.status_code == 200 and again.json()["status"] == "unchanged"
            assert upstream.count("/slow/game.cfg") == hits
            # it learnt v7 from the shared files and result store: no plugin state
            # travels with the socket (issue 9)
            assert "took the listening socket from version 1" in v2.log()
        finally:
            for sidecar in (v2, v1):
                if sidecar is not None:
                    sidecar.stop()


def test_an_older_instance_never_steals_the_socket_back(tmp_path: Path) -> None:
    handoff = tmp_path / "shm"
    port = free_port()
    (tmp_path / "new").mkdir()
    (tmp_path / "old").mkdir()
    config = {"plugins": [{"name": "test_sleeper"}]}
    new = start_sidecar(config, tmp_path / "new", env=_env(3, 2, handoff), port=port)
    old: Sidecar | None = None
    try:
        # /healthz answers at once: the newer instance holds the port
        old = start_sidecar(config, tmp_path / "old", env=_env(2, 3, handoff), port=port)
        old.wait_for(lambda: "staying idle" in old.log(), what="the older instance idles")
        for _ in range(20):
            body = requests.get(f"{new.url}/healthz", timeout=5).json()
            assert body["sidecarsetVersion"] == 3
        assert _children(old) == []
    finally:
        for sidecar in (old, new):
            if sidecar is not None:
                sidecar.stop()


def test_newer_instance_binds_normally_when_nobody_answers(tmp_path: Path) -> None:
    sidecar = start_sidecar({"plugins": [{"name": "test_sleeper"}]}, tmp_path,
                            env=_env(5, 4, tmp_path / "shm"))
    try:
        assert "no older instance answered" in sidecar.log()
        assert sidecar.get("/healthz").json()["mode"] == "serving"
    finally:
        sidecar.stop()


def test_newer_instance_dying_before_ready_leaves_the_older_serving(tmp_path: Path) -> None:
    """A newer instance that takes the fds and dies: the older one never stopped accepting."""
    import socket

    from kidecar_supervisor.handoff import HandoffSettings, ask_older_instance

    handoff = tmp_path / "shm"
    port = free_port()
    v1 = start_sidecar({"plugins": [{"name": "test_sleeper"}]}, tmp_path,
                       env=_env(1, 0, handoff), port=port)
    try:
        takeover = ask_older_instance(HandoffSettings(2, 1, handoff, port))
        assert takeover is not None and takeover.peer_version == 1
        assert isinstance(takeover.listener, socket.socket)
        takeover.channel.close()  # "dies" without READY
        takeover.listener.close()
        for _ in range(50):
            assert requests.get(f"{v1.url}/healthz", timeout=5).status_code == 200
        assert "went away before it was ready" in v1.log() or "aborted" in v1.log()
        assert requests.get(f"{v1.url}/healthz", timeout=5).json()["mode"] == "serving"
    finally:
        v1.stop()


def test_empty_mode_only_waits(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([*KIDECAR, "run", "--empty",
                             "--port", str(port), "--state-dir", str(tmp_path / "state")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        health = None
        for _ in range(100):
            health = subprocess.run([sys.executable, "-m", "kidecar_supervisor.cli", "health",
                                     "--state-dir", str(tmp_path / "state")],
                                    capture_output=True, timeout=30)
            if health.returncode == 0:
                break
            time.sleep(0.1)
        assert health is not None and health.returncode == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        proc.terminate()
        assert proc.wait(20) == 0


def _children(sidecar: Sidecar) -> list:
    import psutil

    return psutil.Process(sidecar.proc.pid).children(recursive=True)
