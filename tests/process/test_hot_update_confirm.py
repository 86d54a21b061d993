"""Verified hot update (DESIGN §9, issue 10): the game confirms the version, or kidecar rolls back.

A real game process (tests/support/fake_game.py) reloads on SIGHUP and reports
the version it loaded on a loopback ``/version`` endpoint; what it does with a
file is up to the file (load, refuse, never report, crash), so each test only
serves different files from a real loopback HTTP server. The plugin runs
in-process with a real LocalStore (the harness), as one start of its process.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kidecar_supervisor.plugin_api import PluginCallError
from tests.support.fake_game import FakeGame
from tests.support.hot_update_harness import PluginRun, dir_listing, signal_config
from tests.support.sidecar_process import Sidecar, start_sidecar
from tests.support.upstream_server import UpstreamServer, free_port

V1 = json.dumps({"version": "v1"}).encode()
OLD = V1  # the file_dir fixture's file: the game starts on v1


def version_file(version: str, **behaviour: Any) -> bytes:
    return json.dumps({"version": version, **behaviour}).encode()


def confirm_config(file_dir: Path, game: FakeGame, timeout: float = 3.0,
                   **extra: Any) -> dict[str, Any]:
    return signal_config(file_dir, game.tag, confirm={
        "http": {"url": game.version_url, "jsonPath": "$.version"},
        "errorJsonPath": "$.lastReloadError", "timeoutSeconds": timeout,
        "intervalSeconds": 0.05}, **extra)


@pytest.fixture
def game(tmp_path: Path, file_dir: Path) -> Iterator[FakeGame]:
    proc = FakeGame(tmp_path, file_dir / "index.html", version_port=free_port())
    yield proc
    proc.stop()


@pytest.fixture
def run(tmp_path: Path, file_dir: Path, game: FakeGame) -> Iterator[PluginRun]:
    with PluginRun(confirm_config(file_dir, game), tmp_path / "state") as running:
        yield running


def post(run: PluginRun, upstream: UpstreamServer, version: str, **behaviour: Any,
         ) -> tuple[int, dict[str, Any]]:
    url = upstream.add_file(f"{version}/index.html", version_file(version, **behaviour))
    return run.call({"version": version, "url": url})


def test_ack_confirms_the_update(run: PluginRun, upstream: UpstreamServer, file_dir: Path,
                                 game: FakeGame) -> None:
    status, body = post(run, upstream, "v2")
    assert status == 200, body
    assert body["outcome"] == "succeeded" and "the game reports v2" in body["confirmed"]
    assert game.report()["version"] == "v2"
    snap = run.status()
    assert (snap["version"], snap["stage"], snap["state"]) == ("v2", "succeeded", "idle")
    # the file that was replaced is kept (named by what the game reported), and the new one
    assert [k["version"] for k in snap["kept"]] == ["v2", "v1"]
    assert run.results()[0].success and "confirmed" in run.results()[0].message
    assert run.gauges["kidecar_hot_update_last_success"] == 1.0
    assert run.gauges["kidecar_hot_update_stage_duration_seconds_count"] >= 1


def assert_rolled_back(run: PluginRun, file_dir: Path, game: FakeGame, status: int,
                       body: dict[str, Any], refused: str, reason: str) -> None:
    assert status == 424, body
    assert body["outcome"] == "rolledBack" and body["refusedVersion"] == refused
    assert body["runningVersion"] == "v1" and reason in body["reason"], body
    assert (file_dir / "index.html").read_bytes() == V1  # byte for byte
    assert dir_listing(file_dir) == {"index.html": V1}
    game.wait_for(lambda r: r["version"] == "v1" and r["error"] == "")
    snap = run.status()
    assert (snap["version"], snap["stage"]) == ("v1", "rolledBack")
    last = run.results()[0]
    assert (last.version, last.success) == (refused, False)
    assert "rolled back" in last.message and "v1" in last.message
    assert run.gauges["kidecar_hot_update_last_success"] == 0.0


def test_nack_through_errorJsonPath_rolls_back_at_once(run: PluginRun, upstream: UpstreamServer,
                                                       file_dir: Path, game: FakeGame) -> None:
    status, body = post(run, upstream, "v3", reject="syntax error in line 3")
    assert_rolled_back(run, file_dir, game, status, body, "v3", "syntax error in line 3")


def test_a_game_that_never_reports_the_version_is_rolled_back(
        run: PluginRun, upstream: UpstreamServer, file_dir: Path, game: FakeGame) -> None:
    status, body = post(run, upstream, "v4", silent=True)
    assert_rolled_back(run, file_dir, game, status, body, "v4", "did not report 'v4'")


def test_a_game_that_dies_after_the_reload_is_rolled_back(
        tmp_path: Path, upstream: UpstreamServer, file_dir: Path, game: FakeGame) -> None:
    replacement: list[FakeGame] = [game]
    done = threading.Event()

    def kubelet() -> None:  # restarts the crashed game container; it reads the file in place
        while not done.is_set():
            if replacement[-1].proc.poll() is not None:
                try:
                    replacement.append(replacement[-1].restarted())
                except AssertionError:
                    pass  # it died at once on the refused file: a crash loop, next round
            done.wait(0.05)

    restarter = threading.Thread(target=kubelet)
    restarter.start()
    try:
        with PluginRun(confirm_config(file_dir, game, timeout=10), tmp_path / "state") as run:
            status, body = post(run, upstream, "v5", crash=True)
            assert status == 424 and "died after the reload" in body["reason"], body
            assert body["runningVersion"] == "v1"
            assert (file_dir / "index.html").read_bytes() == V1
            done.set()
            restarter.join(20)
            assert replacement[-1].report()["version"] == "v1"
    finally:
        done.set()
        restarter.join(20)
        for proc in replacement[1:]:
            proc.stop()


def test_a_rollback_that_fails_too_is_failed_and_unready(
        tmp_path: Path, upstream: UpstreamServer, file_dir: Path, game: FakeGame) -> None:
    with PluginRun(confirm_config(file_dir, game, timeout=1), tmp_path / "state") as run:
        run.ready.clear()
        readiness: list[bool] = []
        run.ctx._ready_cb = readiness.append
        status, body = post(run, upstream, "v5", crash=True)  # and nobody restarts the game
        assert status == 500 and body["outcome"] == "failed", body
        assert readiness[-1] is False
        assert run.status()["stage"] == "failed"
        reasons = [(reason, warning) for reason, _, warning in run.events()]
        assert ("HotUpdateFailed", 1) in reasons
        assert (file_dir / "index.html").read_bytes() == V1  # the kept file is back anyway


def test_manual_rollback_to_each_kept_version(run: PluginRun, upstream: UpstreamServer,
                                              file_dir: Path, game: FakeGame) -> None:
    for version in ("v2", "v3", "v4"):
        assert post(run, upstream, version)[0] == 200
    assert [k["version"] for k in run.status()["kept"]] == ["v4", "v3", "v2"]  # keepVersions 3
    downloads = sum(upstream.hits.values())
    back = run.plugin.handle("hot_update_rollback", {})
    assert back["version"] == "v3" and back["outcome"] == "succeeded", back
    game.wait_for(lambda r: r["version"] == "v3")
    for version in ("v2", "v4", "v3"):
        body = run.plugin.handle("hot_update_rollback", {"version": version})
        assert body["version"] == version and "confirmed" in body, body
        game.wait_for(lambda r, v=version: r["version"] == v)
        assert (file_dir / "index.html").read_bytes() == version_file(version)
        assert run.results()[0].version == version and "rollback on demand" in \
            run.results()[0].message
    assert sum(upstream.hits.values()) == downloads, "a rollback downloads nothing"
    with pytest.raises(PluginCallError) as unknown:
        run.plugin.handle("hot_update_rollback", {"version": "v9"})
    assert unknown.value.status == 404 and "v2" in unknown.value.message


def test_versions_with_dots_and_dashes(run: PluginRun, upstream: UpstreamServer,
                                       game: FakeGame) -> None:
    for version in ("1.4.2-hotfix3", "2026.11.29-b42", "v2"):
        status, body = post(run, upstream, version)
        assert status == 200 and body["version"] == version, body
        game.wait_for(lambda r, v=version: r["version"] == v)
    assert run.plugin.handle("hot_update_rollback", {"version": "1.4.2-hotfix3"})["version"] \
        == "1.4.2-hotfix3"


def test_credentials_in_the_url_appear_nowhere(tmp_path: Path, upstream: UpstreamServer,
                                               file_dir: Path, game: FakeGame,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    upstream.add_file("v2/index.html", version_file("v2"))
    secret_url = upstream.url("files/v2/index.html").replace(
        "http://", "http://player:s3cr3tpass@") + "?token=TOPSECRETTOKEN"
    state = tmp_path / "state"
    with PluginRun(confirm_config(file_dir, game), state) as run:
        status, body = run.call({"version": "v2", "url": secret_url})
        assert status == 200, body
        gone = secret_url.replace("/v2/", "/v9/").replace("v2/index", "v9/index")
        assert run.call({"version": "v9", "url": gone})[0] == 502
        seen = json.dumps([body, run.status(), [r.to_dict() for r in run.results()],
                           run.events()])
    for secret in ("s3cr3tpass", "TOPSECRETTOKEN", "player:"):
        assert secret not in seen
        assert secret not in caplog.text
        for path in [*state.rglob("*"), *file_dir.rglob("*")]:
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
    assert "***" in body["url"] and body["url"].startswith("http://***@127.0.0.1")


def test_a_url_outside_allowedUrlPrefixes_is_403_before_any_connection(
        tmp_path: Path, file_dir: Path, game: FakeGame, upstream: UpstreamServer) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    allowed = upstream.url("files/")
    cfg = confirm_config(file_dir, game, allowedUrlPrefixes=[allowed])
    try:
        with PluginRun(cfg, tmp_path / "state") as run:
            for url in (f"http://127.0.0.1:{port}/files/index.html",
                        f"http://127.0.0.1:{port}/files/index.html?{allowed}"):
                status, body = run.call({"version": "v2", "url": url})
                assert status == 403 and "allowedUrlPrefixes" in body["error"], body
            with pytest.raises(OSError):
                listener.accept()  # nobody ever connected
            assert post(run, upstream, "v2")[0] == 200  # inside the prefix: fine
    finally:
        listener.close()


def test_fileDir_holds_only_the_games_files_after_mixed_updates(
        run: PluginRun, upstream: UpstreamServer, file_dir: Path, game: FakeGame) -> None:
    outcomes = []
    for number in range(20):
        version = f"v{number + 10}"
        behaviour: dict[str, Any] = {}
        if number % 4 == 1:
            behaviour = {"reject": "bad file"}
        elif number % 4 == 3:
            outcomes.append(run.call({"version": version,
                                      "url": upstream.url("status/404/index.html")})[0])
            continue
        outcomes.append(post(run, upstream, version, **behaviour)[0])
        assert sorted(p.name for p in file_dir.iterdir()) == ["index.html"]
    assert sorted(set(outcomes)) == [200, 424, 502]
    assert sorted(p.name for p in file_dir.iterdir()) == ["index.html"]
    assert len(run.status()["kept"]) == 3


@pytest.mark.slow
def test_sidecar_killed_while_confirming_finishes_on_restart(
        tmp_path: Path, upstream: UpstreamServer, file_dir: Path, game: FakeGame) -> None:
    """SIGKILL of the whole real sidecar tree mid-confirming: the next start rolls back."""
    def sidecar_config(timeout: float) -> dict[str, Any]:
        return {"plugins": [{"name": "hot_update",
                             "config": confirm_config(file_dir, game, timeout=timeout)}]}

    sidecar = start_sidecar(sidecar_config(60), tmp_path, wait_ready=True)
    outcome: list[Any] = []
    try:
        v2 = upstream.add_file("v2/index.html", version_file("v2"))
        assert sidecar.post("/hot-update", data={"version": "v2", "url": v2}).status_code == 200
        v3 = upstream.add_file("v3/index.html", version_file("v3", silent=True))
        poster = threading.Thread(target=lambda: outcome.append(_post_quietly(sidecar, v3)))
        poster.start()
        sidecar.wait_for(lambda: sidecar.get("/hot-update").json()["stage"] == "confirming",
                         timeout=20)
        sidecar.kill_all()
        poster.join(20)
    finally:
        if sidecar.proc.poll() is None:
            sidecar.stop()
    assert (file_dir / "index.html").read_bytes() == version_file("v3", silent=True)
    again = start_sidecar(sidecar_config(2), tmp_path, wait_ready=True, timeout=40)
    try:
        # ready means finished: v3 was never confirmed, so v2 is back, confirmed
        assert (file_dir / "index.html").read_bytes() == version_file("v2")
        assert dir_listing(file_dir) == {"index.html": version_file("v2")}
        game.wait_for(lambda r: r["version"] == "v2")
        status = again.get("/hot-update").json()
        assert status["version"] == "v2" and status["history"][0]["version"] == "v3"
        assert status["history"][0]["success"] is False
        assert not (tmp_path / "state" / "hot-update-pending.json").exists()
    finally:
        again.stop()


@pytest.mark.slow
def test_sidecar_killed_while_a_slow_game_loads_confirms_on_restart(
        tmp_path: Path, upstream: UpstreamServer, file_dir: Path, game: FakeGame) -> None:
    """The game reports v3 only after the kill: the restarted sidecar confirms v3, keeps it."""
    config = {"plugins": [{"name": "hot_update",
                           "config": confirm_config(file_dir, game, timeout=30)}]}
    sidecar = start_sidecar(config, tmp_path, wait_ready=True)
    slow = version_file("v3", delay=4)
    try:
        url = upstream.add_file("v3/index.html", slow)
        poster = threading.Thread(target=_post_quietly, args=(sidecar, url))
        poster.start()
        sidecar.wait_for(lambda: sidecar.get("/hot-update").json()["stage"] == "confirming",
                         timeout=20)
        sidecar.kill_all()
        poster.join(20)
    finally:
        if sidecar.proc.poll() is None:
            sidecar.stop()
    again = start_sidecar(config, tmp_path, wait_ready=True, timeout=40)
    try:
        assert (file_dir / "index.html").read_bytes() == slow
        assert game.report()["version"] == "v3"
        status = again.get("/hot-update").json()
        assert status["version"] == "v3" and status["history"][0]["success"] is True
        assert "confirmed at start" in status["history"][0]["message"]
        assert not (tmp_path / "state" / "hot-update-pending.json").exists()
    finally:
        again.stop()


def _post_quietly(sidecar: Sidecar, url: str) -> Any:
    try:
        return sidecar.post("/hot-update", data={"version": "v3", "url": url}).status_code
    except Exception as exc:  # the sidecar was killed under the request
        return exc


@pytest.mark.slow
def test_failed_is_readyz_503_until_an_update_succeeds_and_metrics_say_so(
        tmp_path: Path, upstream: UpstreamServer, file_dir: Path, game: FakeGame) -> None:
    config = {"plugins": [{"name": "hot_update",
                           "config": confirm_config(file_dir, game, timeout=1)}]}
    sidecar = start_sidecar(config, tmp_path, wait_ready=True)
    restarted: list[FakeGame] = []
    try:
        v2 = upstream.add_file("v2/index.html", version_file("v2"))
        assert sidecar.post("/hot-update", data={"version": "v2", "url": v2}).status_code == 200
        metrics = sidecar.get("/metrics").text
        assert 'kidecar_hot_update_info{plugin="hot_update",version="v2"} 1.0' in metrics
        assert 'kidecar_hot_update_last_success{plugin="hot_update"} 1.0' in metrics
        assert 'kidecar_hot_update_stage_duration_seconds_bucket{le="+Inf",plugin=' \
               '"hot_update",stage="confirming"} 1.0' in metrics

        crash = upstream.add_file("v5/index.html", version_file("v5", crash=True))
        failed = sidecar.post("/hot-update", data={"version": "v5", "url": crash})
        assert failed.status_code == 500 and failed.json()["outcome"] == "failed", failed.text
        assert sidecar.get("/readyz").status_code == 503
        assert sidecar.get("/hot-update").json()["stage"] == "failed"
        assert 'kidecar_hot_update_last_success{plugin="hot_update"} 0.0' in \
            sidecar.get("/metrics").text

        restarted.append(game.restarted())  # the game is back (on the v2 file put back)
        v6 = upstream.add_file("v6/index.html", version_file("v6"))
        assert sidecar.post("/hot-update", data={"version": "v6", "url": v6}).status_code == 200
        sidecar.wait_for(lambda: sidecar.get("/readyz").status_code == 200, timeout=10)
    finally:
        sidecar.stop()
        for proc in restarted:
            proc.stop()


def test_confirm_through_a_file_the_game_writes(tmp_path: Path, upstream: UpstreamServer,
                                                file_dir: Path) -> None:
    loaded = tmp_path / "loaded-version"
    game = FakeGame(tmp_path, file_dir / "index.html", version_file=loaded)
    try:
        cfg = signal_config(file_dir, game.tag, confirm={
            "file": {"path": str(loaded)}, "timeoutSeconds": 2, "intervalSeconds": 0.05})
        with PluginRun(cfg, tmp_path / "state") as run:
            status, body = post(run, upstream, "v2")
            assert status == 200 and f"at {loaded}" in body["confirmed"], body
            status, body = post(run, upstream, "v3", silent=True)
            assert status == 424 and body["runningVersion"] == "v2", body
        assert loaded.read_text() == "v2"
    finally:
        game.stop()


def test_rollback_without_confirm_and_its_refusals(tmp_path: Path, upstream: UpstreamServer,
                                                   file_dir: Path, game: FakeGame) -> None:
    """Without confirm an update is the seed's; the kept copies still allow a rollback."""
    with PluginRun(signal_config(file_dir, game.tag), tmp_path / "state") as run:
        with pytest.raises(PluginCallError) as nothing:
            run.plugin.handle("hot_update_rollback", {})
        assert nothing.value.status == 409
        assert post(run, upstream, "v1")[0] == 200  # the image's file has no known version
        status, body = post(run, upstream, "v2", silent=True)  # never reported: no matter
        assert status == 200 and "confirmed" not in body and body["outcome"] == "succeeded"
        back = run.plugin.handle("hot_update_rollback", {"version": ""})
        assert back["version"] == "v1" and back["status"] == "updated", back
        game.wait_for(lambda r: r["version"] == "v1")
        assert (file_dir / "index.html").read_bytes() == V1
        with pytest.raises(PluginCallError) as bad:
            run.plugin.handle("hot_update_rollback", {"version": "v1", "url": "x"})
        assert bad.value.status == 400
        assert run.plugin.handle("hot_update_rollback", {"version": "v1"})["status"] == \
            "unchanged"
