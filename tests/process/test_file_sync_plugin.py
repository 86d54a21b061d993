"""The file_sync plugin in-process: real files, a real game process getting real SIGHUPs,
a real HTTP reload endpoint, a real LocalStore."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kidecar_supervisor.config_reader import ConfigReader
from kidecar_supervisor.plugin_api import PluginContext, PodIdentity
from kidecar_supervisor.storage.local import LocalStore
from tests.support.fake_game import FakeGame
from tests.support.upstream_server import UpstreamServer
from workers.file_sync.config import FileSyncConfig
from workers.file_sync.marker import read_marker
from workers.file_sync.plugin import FileSyncPlugin


class SyncRun:
    """One start of the plugin process, as the plugin runtime would drive it."""

    def __init__(self, config: dict[str, Any], state_dir: Path) -> None:
        self.cfg = FileSyncConfig.parse(ConfigReader(config, "plugins[0].config", "test.yaml"))
        identity = PodIdentity(pod_name="pod-a", namespace="default")
        self.store = LocalStore(self.cfg.storage, identity, state_dir, workload="game-a")
        self.ready = threading.Event()
        self.ctx = PluginContext(
            name="file_sync", config=self.cfg, state_dir=state_dir, identity=identity,
            logger=logging.getLogger("kidecar.test.file_sync"),
            _store_factory=lambda cfg: self.store,
            _ready_cb=self._on_ready)
        self.plugin = FileSyncPlugin()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_ready(self, ready: bool) -> None:
        if ready:
            self.ready.set()

    def _run(self) -> None:
        try:
            self.plugin.run()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            self.error = exc

    def start(self) -> SyncRun:
        self.plugin.init(self.ctx)
        self.thread.start()
        return self

    def wait_state(self, *states: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.plugin.status()
            if status["state"] in states:
                return status
            if not self.thread.is_alive():
                raise AssertionError(f"run() ended: {self.error!r}; status {status}")
            time.sleep(0.02)
        raise AssertionError(f"never reached {states}: {self.plugin.status()}")

    def stop(self) -> None:
        self.ctx.stop_requested.set()
        self.plugin.stop()
        self.thread.join(20)
        assert not self.thread.is_alive(), "run() did not return after stop"
        self.store.close()

    def events(self) -> list[tuple[str, str, int]]:
        with sqlite3.connect(self.store.path) as db:
            return list(db.execute("SELECT reason, message, warning FROM events ORDER BY id"))


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    out = {name: tmp_path / name for name in ("src", "dst", "state", "work")}
    for path in out.values():
        path.mkdir()
    (out["src"] / "index.html").write_text("v2 content")
    (out["src"] / "scripts").mkdir()
    (out["src"] / "scripts" / "main.lua").write_text("return 2")
    return out


@pytest.fixture
def game(dirs: dict[str, Path]) -> Iterator[FakeGame]:
    (dirs["dst"] / "index.html").write_text("v1 content")
    fake = FakeGame(dirs["work"], dirs["dst"] / "index.html")
    yield fake
    fake.stop()


def signal_cfg(dirs: dict[str, Path], process_name: str, **extra: Any) -> dict[str, Any]:
    return {"srcDir": str(dirs["src"]), "dstDir": str(dirs["dst"]), "loadPatchType": "signal",
            "signal": {"processName": process_name, "signalName": "SIGHUP"},
            "storageConfig": {"type": "Local"}, **extra}


def request_cfg(dirs: dict[str, Path], url: str, deadline: float, **extra: Any) -> dict[str, Any]:
    return {"srcDir": str(dirs["src"]), "dstDir": str(dirs["dst"]), "loadPatchType": "request",
            "request": {"url": url, "method": "POST", "timeoutSeconds": 2,
                        "deadlineSeconds": deadline},
            "storageConfig": {"type": "Local"}, **extra}


def run_once(config: dict[str, Any], state: Path, *done: str) -> tuple[SyncRun, dict[str, Any]]:
    run = SyncRun(config, state).start()
    status = run.wait_state(*(done or ("synced",)))
    return run, status


def test_copies_then_signals_the_game_once_and_records_the_version(
        dirs: dict[str, Path], game: FakeGame) -> None:
    run, status = run_once(signal_cfg(dirs, game.tag, version="v2"), dirs["state"])
    try:
        assert run.ready.is_set()
        report = game.wait_for(lambda r: r["hups"] >= 1)
        time.sleep(0.3)
        assert game.report()["hups"] == 1  # type: ignore[index]
        assert report["content"] == "v2 content"  # the game read the complete new file
        assert (dirs["dst"] / "scripts" / "main.lua").read_text() == "return 2"
        assert status["copied"] == 2 and status["version"] == "v2"
        assert status["lastReload"]["ok"] and f"pid(s) {game.proc.pid}" in \
            status["lastReload"]["message"]
        record = run.store.latest_for_pod("file_sync")
        assert record is not None and record.version == "v2" and record.success
        assert record.url == f"file://{dirs['src']}" and record.sha256 == status["digest"]
        assert "copied 2 file(s)" in record.message
    finally:
        run.stop()


def test_restart_with_unchanged_files_does_nothing_changed_files_reload_again(
        dirs: dict[str, Path], game: FakeGame) -> None:
    cfg = signal_cfg(dirs, game.tag, version="v2")
    run, _ = run_once(cfg, dirs["state"])
    run.stop()
    game.wait_for(lambda r: r["hups"] == 1)
    mtime = (dirs["dst"] / "index.html").stat().st_mtime_ns
    run, status = run_once(cfg, dirs["state"])  # e.g. the plugin process restarted
    run.stop()
    time.sleep(0.3)
    assert game.report()["hups"] == 1  # type: ignore[index]
    assert status["copied"] == 0 and status["unchanged"] == 2 and "lastReload" not in status
    assert (dirs["dst"] / "index.html").stat().st_mtime_ns == mtime
    assert len(LocalStore(run.cfg.storage, PodIdentity("pod-a", "default"), dirs["state"],
                          "game-a").history("file_sync")) == 1
    (dirs["src"] / "index.html").write_text("v3 content")  # a new sidecar image
    run, status = run_once(signal_cfg(dirs, game.tag, version="v3"), dirs["state"])
    run.stop()
    report = game.wait_for(lambda r: r["hups"] == 2)
    assert report["content"] == "v3 content" and status["copied"] == 1


def test_no_game_process_is_not_a_failure_in_signal_mode(dirs: dict[str, Path]) -> None:
    run, status = run_once(signal_cfg(dirs, "no-such-game-process-xyz"), dirs["state"])
    run.stop()
    assert status["lastReload"]["ok"] and status["lastReload"]["skipped"]
    assert "nothing to reload" in status["lastReload"]["message"]
    marker = read_marker(dirs["dst"])
    assert marker is not None and marker.reloaded
    assert status["version"].startswith("sha256-") and len(status["version"]) == 19


def test_request_mode_is_retried_until_2xx(dirs: dict[str, Path]) -> None:
    with UpstreamServer() as upstream:
        upstream.reload_failures = 3
        upstream.reload_status = 503
        run, status = run_once(request_cfg(dirs, upstream.url("reload"), 20, version="v5"),
                               dirs["state"])
        try:
            assert upstream.reload_calls == 4
            assert status["lastReload"]["ok"]
            assert "answered 200 on attempt 4" in status["lastReload"]["message"]
            record = run.store.latest_for_pod("file_sync")
            assert record is not None and record.version == "v5" and record.success
        finally:
            run.stop()


def test_failed_reload_is_recorded_and_retried_at_the_next_start(dirs: dict[str, Path]) -> None:
    with UpstreamServer() as upstream:
        upstream.reload_failures = 10**6
        cfg = request_cfg(dirs, upstream.url("reload"), 1.0, version="v6")
        run, status = run_once(cfg, dirs["state"])
        run.stop()
        assert not status["lastReload"]["ok"] and "answered 500" in status["lastReload"]["message"]
        marker = read_marker(dirs["dst"])
        assert marker is not None and not marker.reloaded
        store = LocalStore(run.cfg.storage, PodIdentity("pod-a", "default"), dirs["state"],
                           "game-a")
        failed = store.history("file_sync")
        store.close()
        assert len(failed) == 1 and not failed[0].success and "reload failed" in failed[0].message
        upstream.reload_failures = 0
        calls = upstream.reload_calls
        run, status = run_once(cfg, dirs["state"])  # nothing to copy, but not reloaded yet
        run.stop()
        assert status["copied"] == 0 and upstream.reload_calls == calls + 1
        assert status["lastReload"]["ok"] and read_marker(dirs["dst"]).reloaded  # type: ignore[union-attr]


def test_version_from_env(dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAME_FILES_VERSION", "2024.06-b7")
    run, status = run_once(signal_cfg(dirs, "no-such-game-xyz", versionEnv="GAME_FILES_VERSION"),
                           dirs["state"])
    record = run.store.latest_for_pod("file_sync")
    run.stop()
    assert status["version"] == "2024.06-b7"
    assert record is not None and record.version == "2024.06-b7"
    monkeypatch.delenv("GAME_FILES_VERSION")
    with pytest.raises(RuntimeError, match="versionEnv GAME_FILES_VERSION is not set"):
        SyncRun(signal_cfg(dirs, "x", versionEnv="GAME_FILES_VERSION"), dirs["state"]).start()


def test_copy_failure_fails_the_run_and_is_recorded(dirs: dict[str, Path]) -> None:
    (dirs["dst"] / "scripts").write_text("a file where the scripts directory must go")
    run = SyncRun(signal_cfg(dirs, "no-such-game-xyz", version="v9"), dirs["state"]).start()
    run.thread.join(20)
    assert isinstance(run.error, RuntimeError) and "cannot copy" in str(run.error)
    assert not run.ready.is_set()
    history = run.store.history("file_sync")
    run.store.close()
    assert len(history) == 1 and not history[0].success and history[0].version == "v9"


def test_missing_src_dir_fails_init(dirs: dict[str, Path]) -> None:
    cfg = signal_cfg(dirs, "x")
    cfg["srcDir"] = str(dirs["src"] / "nope")
    with pytest.raises(RuntimeError, match="srcDir .*nope is not a directory"):
        SyncRun(cfg, dirs["state"]).start()


# -- watch mode -------------------------------------------------------------------------
WATCH = {"enabled": True, "debounceSeconds": 0.6, "intervalSeconds": 0.05}


def test_watch_burst_of_20_writes_reloads_exactly_once(
        dirs: dict[str, Path], game: FakeGame) -> None:
    run, _ = run_once(signal_cfg(dirs, game.tag, watch=WATCH), dirs["state"], "watching")
    try:
        game.wait_for(lambda r: r["hups"] == 1)  # the start-up sync
        for i in range(20):
            (dirs["dst"] / f"level{i % 7}.json").write_text(f"write {i}")
            time.sleep(0.02)
        (dirs["dst"] / "index.html").write_text("written by another container")
        report = game.wait_for(lambda r: r["hups"] == 2, timeout=10)
        assert report["content"] == "written by another container"
        time.sleep(1.5)
        assert game.report()["hups"] == 2  # type: ignore[index]
        status = run.plugin.status()
        assert status["bursts"] == 1 and status["reloads"] == 2
        (dirs["dst"] / "scripts" / "main.lua").write_text("return 3")  # a second burst
        game.wait_for(lambda r: r["hups"] == 3, timeout=10)
        time.sleep(1.0)
        assert game.report()["hups"] == 3  # type: ignore[index]
        reasons = [e[0] for e in run.events()]
        assert reasons.count("FileSyncReload") == 2
    finally:
        run.stop()


def test_watch_ignores_hidden_temp_files_and_own_copies(
        dirs: dict[str, Path], game: FakeGame) -> None:
    run, _ = run_once(signal_cfg(dirs, game.tag, watch=WATCH), dirs["state"], "watching")
    try:
        game.wait_for(lambda r: r["hups"] == 1)
        for i in range(5):
            (dirs["dst"] / f".partial-{i}").write_text("x" * i)
        (dirs["dst"] / ".cache").mkdir()
        (dirs["dst"] / ".cache" / "blob").write_text("y")
        time.sleep(1.5)
        assert game.report()["hups"] == 1  # type: ignore[index]
        assert run.plugin.status()["bursts"] == 0
    finally:
        run.stop()


def test_stop_returns_promptly_while_a_request_reload_is_retrying(dirs: dict[str, Path]) -> None:
    with UpstreamServer() as upstream:
        upstream.reload_failures = 10**6
        run = SyncRun(request_cfg(dirs, upstream.url("reload"), 300), dirs["state"]).start()
        assert run.ready.wait(10)  # ready once the files are in place, not after the reload
        run.wait_state("reloading")
        started = time.monotonic()
        run.stop()
        assert time.monotonic() - started < 5
