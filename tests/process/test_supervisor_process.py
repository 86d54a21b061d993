"""The supervisor as a real process: restarts, policies, crash loops, shutdown, ops API.

Every test starts ``kidecar run`` and talks HTTP to it; plugins are real
processes (the misbehaving ones come from tests/plugin_pkg, installed through
the ``kidecar.plugins`` entry point group like any third-party plugin).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.support.sidecar_process import Sidecar, start_sidecar

pytestmark = pytest.mark.slow


def _sidecar(tmp_path: Path, plugins: list[dict], serving_only: bool = False,
             **top: object) -> Sidecar:
    return start_sidecar({"plugins": plugins, **top}, tmp_path, serving_only=serving_only)


@pytest.fixture
def running(tmp_path: Path):
    started: list[Sidecar] = []

    def start(plugins: list[dict], serving_only: bool = False, **top: object) -> Sidecar:
        sidecar = _sidecar(tmp_path, plugins, serving_only, **top)
        started.append(sidecar)
        return sidecar

    yield start
    for sidecar in started:
        sidecar.stop()
        assert sidecar.alive_leftovers() == [], sidecar.log()


def test_kill_9_of_a_plugin_restarts_it_with_a_new_pid(running) -> None:
    sidecar = running([{"name": "test_sleeper"},
                       {"name": "sleeper", "binary": {"path": "sleep", "args": ["3600"]}}])
    for name in ("test_sleeper", "sleeper"):
        before = sidecar.wait_state(name, "Running")
        os.kill(before["pid"], signal.SIGKILL)
        after = sidecar.wait_for(
            lambda n=name, b=before: (p := sidecar.plugin(n))["state"] == "Running"
            and p["pid"] not in (None, b["pid"]) and p, what=f"{name} restarted")
        assert after["restarts"] == before["restarts"] + 1
        assert "SIGKILL" in after["lastError"]
        assert not psutil.pid_exists(before["pid"]) or \
            psutil.Process(before["pid"]).status() == psutil.STATUS_ZOMBIE


def test_never_policy_leaves_a_killed_plugin_stopped(running) -> None:
    sidecar = running([{"name": "test_sleeper", "restartPolicy": "Never"}])
    pid = sidecar.wait_state("test_sleeper", "Running")["pid"]
    os.kill(pid, signal.SIGKILL)
    info = sidecar.wait_state("test_sleeper", "Failed")
    time.sleep(0.5)
    info = sidecar.plugin("test_sleeper")
    assert info["pid"] is None and info["restarts"] == 0 and info["state"] == "Failed"


def test_on_failure_policy_does_not_restart_a_clean_exit(running) -> None:
    sidecar = running([{"name": "test_crasher", "restartPolicy": "OnFailure",
                        "config": {"afterSeconds": 0.2, "exitCode": 0}}])
    info = sidecar.wait_state("test_crasher", "Completed")
    time.sleep(0.5)
    assert sidecar.plugin("test_crasher")["restarts"] == 0
    assert info["lastExitCode"] == 0
    assert sidecar.get("/healthz").status_code == 200


def test_on_failure_policy_restarts_a_failing_exit(running) -> None:
    sidecar = running([{"name": "test_crasher", "restartPolicy": "OnFailure",
                        "backoffSeconds": 0.05, "config": {"afterSeconds": 0.3, "exitCode": 3}}])
    sidecar.wait_for(lambda: sidecar.plugin("test_crasher")["restarts"] >= 2,
                     what="two restarts")


def test_crash_loop_marks_failed_and_fails_healthz(running) -> None:
    sidecar = running([{"name": "test_crasher", "config": {"exitCode": 2},
                        "maxRestarts": 3, "restartWindowSeconds": 60, "backoffSeconds": 0.05},
                       {"name": "test_sleeper"}], serving_only=True)
    info = sidecar.wait_state("test_crasher", "Failed")
    assert info["restarts"] == 3
    assert "crash loop" in info["lastError"]
    health = sidecar.get("/healthz")
    assert health.status_code == 503
    assert health.json()["failed"] == ["test_crasher"]
    # the other plugin is untouched by its neighbour's crash loop
    assert sidecar.plugin("test_sleeper")["state"] == "Running"
    # an operator start gives it a fresh budget
    assert sidecar.post("/plugins/test_crasher/start").status_code == 200


def test_backoff_grows_between_repeated_crashes(running) -> None:
    sidecar = running([{"name": "test_crasher", "config": {"exitCode": 1},
                        "backoffSeconds": 0.4, "maxRestarts": 100}])
    sidecar.wait_for(lambda: sidecar.plugin("test_crasher")["restarts"] >= 3, what="3 restarts")
    # immediate, then 0.4 s, then 0.8 s: three restarts can't happen in under 1.2 s
    log_lines = [line for line in sidecar.log().splitlines() if "restarting test_crasher in" in line]
    assert any("in 0.40s" in line for line in log_lines), log_lines
    assert any("in 0.80s" in line for line in log_lines), log_lines


def test_sigterm_leaves_no_process_even_with_a_stubborn_plugin(tmp_path: Path) -> None:
    marker = tmp_path / "grandchildren"
    sidecar = start_sidecar({"plugins": [
        {"name": "test_stubborn", "stopGraceSeconds": 1, "config": {"markerFile": str(marker)}},
        {"name": "sleeper", "binary": {"path": "sleep", "args": ["3600"]}},
    ]}, tmp_path)
    sidecar.wait_state("test_stubborn", "Running")
    grandchildren = [int(p) for p in marker.read_text().split()]
    assert len(grandchildren) == 2 and all(psutil.pid_exists(p) for p in grandchildren)
    tree = sidecar.tree_pids()
    assert set(grandchildren) <= tree
    assert sidecar.stop() == 0
    time.sleep(0.2)
    leftovers = sidecar.alive_leftovers()
    assert leftovers == [], f"still running: {leftovers}\n{sidecar.log()}"
    for pid in grandchildren:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_restart_one_plugin_leaves_the_others_alone(running) -> None:
    sidecar = running([{"name": "test_sleeper"},
                       {"name": "other", "binary": {"path": "sleep", "args": ["3600"]}}])
    first = sidecar.wait_state("test_sleeper", "Running")
    other = sidecar.wait_state("other", "Running")
    http_pid = sidecar.plugin("http")["pid"]
    response = sidecar.post("/plugins/test_sleeper/restart")
    assert response.status_code == 200
    again = sidecar.wait_for(
        lambda: (p := sidecar.plugin("test_sleeper"))["state"] == "Running"
        and p["pid"] != first["pid"] and p, what="test_sleeper restarted")
    assert again["restarts"] == first["restarts"] + 1
    assert sidecar.plugin("other")["pid"] == other["pid"]
    assert sidecar.plugin("http")["pid"] == http_pid


def test_stop_and_start_a_plugin(running) -> None:
    sidecar = running([{"name": "test_sleeper"}])
    pid = sidecar.wait_state("test_sleeper", "Running")["pid"]
    assert sidecar.post("/plugins/test_sleeper/stop").status_code == 200
    sidecar.wait_state("test_sleeper", "Stopped")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert sidecar.get("/readyz").status_code == 503
    assert sidecar.post("/plugins/test_sleeper/start").status_code == 200
    sidecar.wait_state("test_sleeper", "Running")
    sidecar.wait_for(lambda: sidecar.get("/readyz").status_code == 200, what="ready again")


def test_hung_plugin_is_killed_and_restarted(running) -> None:
    sidecar = running([{"name": "test_hanger", "heartbeatTimeoutSeconds": 1.5,
                        "config": {"afterSeconds": 0.5}}])
    first = sidecar.wait_state("test_hanger", "Running")
    sidecar.wait_for(lambda: psutil.Process(first["pid"]).status() == psutil.STATUS_STOPPED,
                     what="plugin stopped itself")
    again = sidecar.wait_for(
        lambda: (p := sidecar.plugin("test_hanger"))["restarts"] >= 1 and p, timeout=10,
        what="hung plugin restarted")
    assert "no heartbeat" in (again["lastError"] or "")
    assert again["pid"] != first["pid"]


def test_http_child_killed_is_restarted_and_serves(running) -> None:
    sidecar = running([{"name": "test_sleeper"}])
    http = sidecar.plugin("http")
    arbiter = psutil.Process(http["pid"])
    for proc in [arbiter, *arbiter.children(recursive=True)]:
        proc.kill()
    info = sidecar.wait_for(
        lambda: (p := sidecar.plugin("http"))["pid"] != http["pid"] and p, what="http restarted")
    assert info["restarts"] == http["restarts"] + 1
    assert sidecar.get("/healthz").status_code == 200


def test_boot_order_is_ascending_and_shutdown_reverse(tmp_path: Path) -> None:
    sidecar = start_sidecar({"plugins": [
        {"name": "late", "bootOrder": 5, "binary": {"path": "sleep", "args": ["3600"]}},
        {"name": "test_sleeper", "bootOrder": 1},
        {"name": "early", "bootOrder": 0, "binary": {"path": "sleep", "args": ["3600"]}},
    ]}, tmp_path, wait_ready=True)
    sidecar.stop()
    lines = sidecar.log().splitlines()

    def index(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    assert index("started early") < index("started test_sleeper") < index("started late")
    assert index("late exited") < index("test_sleeper exited") < index("early exited")


def test_binary_output_lands_in_the_structured_log(running) -> None:
    sidecar = running([{"name": "talker", "binary": {
        "path": "sh", "args": ["-c", "echo \"hello $GREETING\"; echo oops >&2; sleep 3600"],
        "env": ["GREETING=world"]}}])
    sidecar.wait_for(lambda: "hello world" in sidecar.log(), what="program output")
    import json

    entries = [json.loads(line) for line in sidecar.log().splitlines() if line.startswith("{")]
    said = [e for e in entries if e.get("plugin") == "talker" and e["msg"] in ("hello world",
                                                                                  "oops")]
    assert len(said) == 2
    assert all({"time", "level", "pid"} <= set(e) for e in said)


def test_healthz_answers_fast_while_another_request_is_busy(running, tmp_path: Path) -> None:
    import subprocess

    from tests.support.upstream_server import UpstreamServer

    shared = tmp_path / "shared"
    shared.mkdir()
    game = subprocess.Popen(["sh", "-c", "trap '' HUP; sleep 120", "fake-game-healthz"])
    with UpstreamServer() as upstream:
        sidecar = running([{"name": "hot_update", "config": {
            "fileDir": str(shared), "loadPatchType": "signal",
            "signal": {"processName": "fake-game-healthz", "signalName": "SIGHUP"},
            "storageConfig": {"type": "Local"}}}])
        sidecar.wait_for(lambda: sidecar.get("/readyz").status_code == 200, what="ready")
        import threading

        slow_url = upstream.url("/slow/game.cfg?size=100000&rate=10000")  # ~10 s
        busy = threading.Thread(target=lambda: sidecar.post(
            "/hot-update", data={"version": "v1", "url": slow_url}, timeout=60))
        busy.start()
        sidecar.wait_for(lambda: sidecar.get("/hot-update").json().get("state") == "downloading",
                         what="download running")
        timings = []
        for _ in range(20):
            began = time.monotonic()
            assert sidecar.get("/healthz", timeout=5).status_code == 200
            timings.append(time.monotonic() - began)
            time.sleep(0.1)
        assert busy.is_alive(), "the slow request finished too early to prove anything"
        assert max(timings) < 0.5, timings
        busy.join(60)
    game.kill()
    game.wait()


def test_json_errors_and_token_auth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIDECAR_TOKEN", "s3cret")
    # loopback needs the token too only when told so (issue 15: the seeds' curl keeps working)
    sidecar = start_sidecar({"http": {"allowLoopbackWithoutToken": False},
                             "plugins": [{"name": "test_sleeper"}]}, tmp_path)
    try:
        assert sidecar.get("/plugins/nope").status_code == 404
        assert sidecar.get("/plugins/nope").json()["error"] == "unknown plugin 'nope'"
        assert sidecar.get("/plugins/test_sleeper/restart").status_code == 405
        assert sidecar.get("/no/such/path").status_code == 404
        assert "error" in sidecar.get("/no/such/path").json()
        denied = sidecar.post("/plugins/test_sleeper/restart")
        assert denied.status_code == 401 and "bearer" in denied.json()["error"]
        wrong = sidecar.post("/plugins/test_sleeper/restart",
                             headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        ok = sidecar.post("/plugins/test_sleeper/restart",
                          headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        # health, readiness and metrics never need the token
        assert sidecar.get("/healthz").status_code == 200
        assert sidecar.get("/metrics").status_code == 200
        # hot-update without a hot_update plugin: a clear 404, after auth
        missing = sidecar.post("/hot-update", data={"version": "v1", "url": "http://x/y"},
                               headers={"Authorization": "Bearer s3cret"})
        assert missing.status_code == 404 and "not configured" in missing.json()["error"]
    finally:
        sidecar.stop()


def test_metrics_and_plugin_details(running) -> None:
    sidecar = running([{"name": "test_sleeper"}])
    info = sidecar.wait_state("test_sleeper", "Running")
    assert info["version"] == "1.2.3"
    sidecar.wait_for(lambda: sidecar.plugin("test_sleeper")["infos"].get("pid") == info["pid"],
                     what="status infos from the heartbeat")
    text = sidecar.get("/metrics").text
    assert 'kidecar_plugin_state{plugin="test_sleeper",state="Running"} 1.0' in text
    assert 'kidecar_plugin_restarts_total{plugin="test_sleeper"} 0.0' in text
    assert "kidecar_plugin_uptime_seconds" in text
    page = sidecar.get("/")
    assert page.status_code == 200 and "test_sleeper" in page.text


def test_cli_status_restart_and_health(running, tmp_path: Path) -> None:
    import subprocess
    import sys

    sidecar = running([{"name": "test_sleeper"}])
    sidecar.wait_state("test_sleeper", "Running")
    cli = [sys.executable, "-m", "kidecar_supervisor.cli"]
    status = subprocess.run([*cli, "status", "--sidecar", sidecar.url], capture_output=True,
                            text=True, timeout=30)
    assert status.returncode == 0, status.stderr
    assert "test_sleeper" in status.stdout and "Running" in status.stdout
    before = sidecar.plugin("test_sleeper")["pid"]
    restart = subprocess.run([*cli, "restart", "test_sleeper", "--sidecar", sidecar.url],
                             capture_output=True, text=True, timeout=30)
    assert restart.returncode == 0, restart.stderr
    sidecar.wait_for(lambda: sidecar.plugin("test_sleeper")["pid"] not in (None, before),
                     what="restarted by the CLI")
    unknown = subprocess.run([*cli, "restart", "nope", "--sidecar", sidecar.url],
                             capture_output=True, text=True, timeout=30)
    assert unknown.returncode == 1 and "unknown plugin" in unknown.stderr
    health = subprocess.run([*cli, "health", "--state-dir", str(sidecar.state_dir)],
                            capture_output=True, text=True, timeout=30)
    assert health.returncode == 0, health.stderr
    unreachable = subprocess.run([*cli, "status", "--sidecar", "http://127.0.0.1:9"],
                                 capture_output=True, text=True, timeout=30)
    assert unreachable.returncode == 3


def test_init_failure_is_reported_and_budgeted(running) -> None:
    sidecar = running([{"name": "test_crasher", "maxRestarts": 2, "backoffSeconds": 0.05,
                        "config": {"failInit": True}}], serving_only=True)
    info = sidecar.wait_state("test_crasher", "Failed")
    assert info["restarts"] == 2 and info["lastExitCode"] == 78
    assert "crash loop" in info["lastError"]
    assert "the game directory /nowhere does not exist" in sidecar.log()
    assert sidecar.get("/healthz").status_code == 503


def test_cli_hot_update_is_a_client_of_the_api(running, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.support.upstream_server import UpstreamServer

    shared = tmp_path / "shared"
    game = subprocess.Popen(["sh", "-c", "trap '' HUP; sleep 120", "fake-game-cli"])
    try:
        with UpstreamServer() as upstream:
            url = upstream.add_file("level.cfg", b"level=2\n")
            sidecar = running([{"name": "hot_update", "config": {
                "fileDir": str(shared), "loadPatchType": "signal",
                "signal": {"processName": "fake-game-cli", "signalName": "SIGHUP"}}}])
            cli = [sys.executable, "-m", "kidecar_supervisor.cli", "hot-update",
                   "--sidecar", sidecar.url]
            ok = subprocess.run([*cli, "--version", "v2", "--url", url], capture_output=True,
                                text=True, timeout=60)
            assert ok.returncode == 0, ok.stderr
            assert '"version": "v2"' in ok.stdout
            assert (shared / "level.cfg").read_bytes() == b"level=2\n"
            # versions are label-safe strings (DESIGN §5): a slash is not one
            bad = subprocess.run([*cli, "--version", "two/2", "--url", url], capture_output=True,
                                 text=True, timeout=60)
            assert bad.returncode == 1 and "HTTP 400" in bad.stderr
    finally:
        game.kill()
        game.wait()


def test_hot_update_with_a_mistyped_field_is_refused(running, tmp_path: Path) -> None:
    sidecar = running([{"name": "hot_update", "config": {
        "fileDir": str(tmp_path / "shared"), "loadPatchType": "signal",
        "signal": {"processName": "whatever-game", "signalName": "SIGHUP"}}}])
    sidecar.wait_for(lambda: sidecar.get("/readyz").status_code == 200, what="ready")
    answer = sidecar.post("/hot-update", data={"version": "v1", "url": "http://127.0.0.1:9/a",
                                               "sha": "abc"})
    assert answer.status_code == 400
    assert "unknown field(s) sha" in answer.json()["error"]
    not_json = sidecar.post("/hot-update", data="[1,2]",
                            headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and "JSON object" in not_json.json()["error"]


def _control(sidecar: Sidecar):
    from kidecar_supervisor.control_channel import (
        ControlClient,
        control_socket_path,
        read_authkey,
    )

    return ControlClient(control_socket_path(sidecar.state_dir), read_authkey(sidecar.state_dir))


def test_a_plugin_that_stops_reading_its_pipe_cannot_wedge_the_supervisor(running) -> None:
    import threading

    from kidecar_supervisor.control_channel import ControlError

    sidecar = running([{"name": "test_hanger", "heartbeatTimeoutSeconds": 120,
                        "config": {"afterSeconds": 0.3}},
                       {"name": "test_sleeper"}])
    first = sidecar.wait_state("test_hanger", "Running")
    sidecar.wait_for(lambda: psutil.Process(first["pid"]).status() == psutil.STATUS_STOPPED,
                     what="plugin stopped itself")

    def flood() -> None:
        client = _control(sidecar)
        for _ in range(40):
            try:
                client.request({"op": "call", "target": "test_hanger", "method": "x",
                                "params": {"pad": "x" * 512}}, timeout=0.2)
            except ControlError:
                pass

    threads = [threading.Thread(target=flood) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    # the main loop still answers, and killed the plugin long before its heartbeat timeout
    assert sidecar.get("/healthz", timeout=5).status_code == 200
    again = sidecar.wait_for(lambda: (p := sidecar.plugin("test_hanger"))["restarts"] >= 1 and p,
                             what="the stuck plugin replaced")
    assert "not reading its pipe" in again["lastError"]
    assert sidecar.plugin("test_sleeper")["state"] == "Running"


def test_a_plugin_hung_in_init_is_killed(running) -> None:
    sidecar = running([{"name": "test_hanger", "startTimeoutSeconds": 1, "maxRestarts": 100,
                        "config": {"failInit": True}}])
    info = sidecar.wait_for(lambda: (p := sidecar.plugin("test_hanger"))["restarts"] >= 1 and p,
                            timeout=20, what="hung init killed")
    assert "init() did not finish within 1s" in info["lastError"]


def test_internal_children_cannot_be_stopped(running) -> None:
    sidecar = running([{"name": "test_sleeper"}])
    answer = sidecar.post("/plugins/http/stop")
    assert answer.status_code == 409 and "part of kidecar" in answer.json()["error"]
    assert sidecar.plugin("http")["state"] == "Running"
    assert sidecar.post("/plugins/http/restart").status_code == 200
    # the store runs inside the HTTP child (issue 16): no process of its own to act on
    assert sidecar.post("/plugins/storage/stop").status_code == 404
    assert "storage" not in [p["name"] for p in sidecar.get("/plugins").json()]


def test_restart_then_stop_then_start_keeps_the_policy(running) -> None:
    sidecar = running([{"name": "test_sleeper", "restartPolicy": "Never", "stopGraceSeconds": 3}])
    sidecar.wait_state("test_sleeper", "Running")
    assert sidecar.post("/plugins/test_sleeper/restart").status_code == 200
    assert sidecar.post("/plugins/test_sleeper/stop").status_code == 200
    sidecar.wait_state("test_sleeper", "Stopped")
    assert sidecar.post("/plugins/test_sleeper/start").status_code == 200
    pid = sidecar.wait_state("test_sleeper", "Running")["pid"]
    os.kill(pid, signal.SIGKILL)
    info = sidecar.wait_state("test_sleeper", "Failed")  # Never: no silent restart
    assert info["pid"] is None


def test_a_result_written_while_the_store_restarts_is_not_lost(running, tmp_path: Path) -> None:
    """The store runs in the HTTP child: killed twice, the second restart waits out a
    backoff while the request waits in the supervisor's listen queue."""
    import subprocess

    from tests.support.upstream_server import UpstreamServer

    game = subprocess.Popen(["sh", "-c", "trap '' HUP; sleep 120", "fake-game-storage"])
    try:
        with UpstreamServer() as upstream:
            url = upstream.add_file("a.cfg", b"a=1\n")
            sidecar = running([{"name": "hot_update", "config": {
                "fileDir": str(tmp_path / "shared"), "loadPatchType": "signal",
                "signal": {"processName": "fake-game-storage", "signalName": "SIGHUP"}}}])
            sidecar.wait_for(lambda: sidecar.get("/readyz").status_code == 200, what="ready")
            storage = sidecar.plugin("http")
            os.kill(storage["pid"], signal.SIGKILL)
            second = sidecar.wait_for(
                lambda: (p := sidecar.plugin("http"))["pid"] not in (None, storage["pid"])
                and p["state"] == "Running" and p, what="the store back")
            os.kill(second["pid"], signal.SIGKILL)  # the next restart waits out a backoff
            answer = sidecar.post("/hot-update", data={"version": "v1", "url": url})
            assert answer.status_code == 200, answer.text
            assert answer.json()["recorded"] == "written"
    finally:
        game.kill()
        game.wait()


def test_signalling_a_child_at_once_never_reaches_the_supervisor(running) -> None:
    """A child signalled right after fork must not forward the signal to its parent."""
    sidecar = running([{"name": "test_sleeper", "stopGraceSeconds": 3}])
    for _ in range(30):
        sidecar.wait_state("test_sleeper", "Running")
        sidecar.post("/plugins/test_sleeper/restart")
        sidecar.post("/plugins/test_sleeper/stop")  # SIGTERM to a child just forked
        sidecar.wait_state("test_sleeper", "Stopped")
        sidecar.post("/plugins/test_sleeper/start")
    assert sidecar.proc.poll() is None, sidecar.log()
    assert "shutting down" not in sidecar.log()


def test_only_the_process_with_the_store_loads_sqlite(running, tmp_path: Path) -> None:
    """SQLite backs the Local store only, which runs in the HTTP child: the supervisor
    does not load it before forking, so no plugin process maps it (issue 16)."""
    sidecar = running([{"name": "hot_update", "config": {
        "fileDir": str(tmp_path / "shared"), "loadPatchType": "signal",
        "signal": {"processName": "no-such-game", "signalName": "SIGHUP"}}}])
    sidecar.wait_for(lambda: sidecar.get("/readyz").status_code == 200, what="ready")
    assert sidecar.get("/hot-update").status_code == 200  # the store answered
    roles = {p["pid"]: p["name"] for p in sidecar.get("/plugins").json() if p["pid"]}
    roles[sidecar.proc.pid] = "supervisor"
    mapping = {name: "libsqlite3" in Path(f"/proc/{pid}/maps").read_text()
               for pid, name in roles.items()}
    assert mapping == {"supervisor": False, "http": True, "hot_update": False}, mapping


def test_no_process_of_the_tree_loads_requests_charset_detector(running, tmp_path: Path) -> None:
    """requests imports charset_normalizer (2.6 MiB) only to guess encodings kidecar
    never asks for: deferred, no process of the tree maps it (issue 16)."""
    sidecar = running([{"name": "hot_update", "config": {
        "fileDir": str(tmp_path / "shared"), "loadPatchType": "signal",
        "signal": {"processName": "no-such-game", "signalName": "SIGHUP"}}}])
    sidecar.wait_for(lambda: sidecar.get("/readyz").status_code == 200, what="ready")
    pids = sidecar.tree_pids()
    assert len(pids) >= 3  # supervisor, http (with the store), hot_update
    maps = {pid: Path(f"/proc/{pid}/maps").read_text() for pid in pids}
    assert any("python3" in text for text in maps.values())  # the maps were readable
    loaded = [pid for pid, text in maps.items() if "/charset_normalizer/" in text]
    assert loaded == [], f"charset_normalizer mapped in {loaded}"
