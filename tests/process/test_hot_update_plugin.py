"""hot_update end to end in-process: real HTTP upstream, real game process, real signals.

Every failure case checks the four things a platform engineer relies on: the
status and message the caller gets, the previous file untouched, no temp file
left in fileDir, and the failure recorded in the store.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.fake_game import FakeGame
from tests.support.hot_update_harness import (
    PluginRun,
    dir_listing,
    request_config,
    signal_config,
    wait_until,
)
from tests.support.upstream_server import UpstreamServer, free_port, pattern_sha256

OLD = b"<h1>version 1</h1>\n"
NEW = b"<h1>version 2</h1>\n"



def signal_run(tmp_path: Path, file_dir: Path, game: FakeGame, **extra: Any) -> PluginRun:
    """A plugin run (not started: use it as a context manager) reloading ``game``."""
    return PluginRun(signal_config(file_dir, game.tag, **extra), tmp_path / "state")


@pytest.fixture
def run(tmp_path: Path, file_dir: Path, game: FakeGame) -> Iterator[PluginRun]:
    plugin = signal_run(tmp_path, file_dir, game, downloadTimeoutSeconds=1,
                              maxFileBytes=4096).start()
    yield plugin
    plugin.stop()


def assert_clean_failure(run: PluginRun, before: dict[str, bytes], status: int,
                         body: dict[str, Any], expected: int, fragment: str) -> None:
    """The caller's status + message, previous file untouched, no temp file, failure recorded."""
    assert status == expected, body
    assert fragment in body["error"], body
    assert dir_listing(Path(run.cfg.file_dir)) == before
    last = run.results()[0]
    assert last.success is False and fragment in last.message, last
    assert body["recorded"] == "written"
    snapshot = run.status()
    assert snapshot["state"] == "failed" and fragment in snapshot["lastError"]["error"]


# -- bad input: refused before anything happens -------------------------------------
BAD_INPUT = [
    ({}, "version is required"),
    ({"url": "U/files/index.html"}, "version is required"),
    # label-safe versions only (DESIGN §5): 1-63 of [A-Za-z0-9._-], alphanumeric ends
    ({"version": "-v2", "url": "U/files/index.html"}, "version '-v2' is malformed"),
    ({"version": "v2.", "url": "U/files/index.html"}, "is malformed"),
    ({"version": "v2 beta", "url": "U/files/index.html"}, "is malformed"),
    ({"version": "v2/x", "url": "U/files/index.html"}, "is malformed"),
    ({"version": "v" * 64, "url": "U/files/index.html"}, "is malformed"),
    ({"version": "v2"}, "url is required"),
    ({"version": "v2", "url": ""}, "url is required"),
    ({"version": "v2", "url": "ftp://127.0.0.1/index.html"}, "must be http:// or https://"),
    ({"version": "v2", "url": "file:///etc/passwd"}, "file:// URLs are not allowed"),
    ({"version": "v2", "url": "U/files/..%2F..%2Fetc%2Fpasswd"}, "contains a path separator"),
    ({"version": "v2", "url": "U/files/"}, "ends with '/'"),
    ({"version": "v2", "url": "U/files/.."}, "'..' is not a file name"),
    ({"version": "v2", "url": "U/files/.bashrc"}, "hidden names"),
    ({"version": "v2", "url": "U/files/%2Ehidden"}, "hidden names"),
    ({"version": "v2", "url": "U/files/index.html", "sha256": "abc"}, "64 hexadecimal"),
    ({"version": "v2", "url": "U/files/index.html", "sha": "abc"}, "unknown field(s) sha"),
]


@pytest.mark.parametrize("params, fragment", BAD_INPUT)
def test_bad_input_is_refused_with_400(run: PluginRun, upstream: UpstreamServer,
                                       file_dir: Path, game: FakeGame,
                                       params: dict[str, str], fragment: str) -> None:
    upstream.add_file("index.html", NEW)
    base = upstream.url("").rstrip("/")
    params = {k: v.replace("U/", base + "/") for k, v in params.items()}
    before = dir_listing(file_dir)
    status, body = run.call(params)
    assert status == 400, body
    assert fragment in body["error"], body
    assert dir_listing(file_dir) == before
    assert sum(upstream.hits.values()) == 0, "nothing may be downloaded for bad input"
    assert run.results() == [], "a rejected request is not an update result"
    reason, message, warning = run.events()[-1]
    assert reason == "HotUpdateRejected" and fragment in message and warning == 1
    assert game.report()["hups"] == 0


# -- download failures: recorded, previous file untouched ------------------------------
DOWNLOAD_FAILURES = [
    ("status/404/index.html", {}, 502, "upstream answered 404"),
    ("status/500/index.html", {}, 502, "upstream answered 500"),
    ("stall/index.html?after=1000&length=3000", {}, 504, "stalled: no data for 1s"),
    ("huge/index.html?size=5000&length=1", {}, 413, "more than maxFileBytes (4096)"),
    ("huge/index.html?size=5000&length=0", {}, 413, "larger than maxFileBytes (4096 bytes)"),
    ("files/index.html", {"sha256": "0" * 64}, 422, "sha256 mismatch"),
    ("truncated/index.html?size=1000&length=3000", {}, 502, "broke before the whole file"),
    ("loop/index.html", {}, 502, "redirected more than 10 times"),
]


@pytest.mark.parametrize("path, extra, expected, fragment", DOWNLOAD_FAILURES)
def test_download_failure_leaves_previous_file(run: PluginRun, upstream: UpstreamServer,
                                               file_dir: Path, game: FakeGame, path: str,
                                               extra: dict[str, str], expected: int,
                                               fragment: str) -> None:
    upstream.add_file("index.html", NEW)
    before = dir_listing(file_dir)
    status, body = run.call({"version": "v2", "url": upstream.url(path), **extra})
    assert_clean_failure(run, before, status, body, expected, fragment)
    assert body["stage"] == "download" and body["version"] == "v2"
    assert game.report()["hups"] == 0, "the game must not be reloaded after a failed download"
    if expected == 502 and "answered" in fragment:
        assert body["upstreamStatus"] == int(path.split("/")[1])


def test_connection_refused_is_502(run: PluginRun, file_dir: Path, game: FakeGame) -> None:
    before = dir_listing(file_dir)
    status, body = run.call({"version": "v2",
                             "url": f"http://127.0.0.1:{free_port()}/index.html"})
    assert_clean_failure(run, before, status, body, 502, "connection refused")


def test_process_not_found_is_424_and_downloads_nothing(tmp_path: Path, file_dir: Path,
                                                        upstream: UpstreamServer) -> None:
    url = upstream.add_file("index.html", NEW)
    before = dir_listing(file_dir)
    with PluginRun(signal_config(file_dir, "no-such-game-process-4b1d"), tmp_path / "s") as run:
        status, body = run.call({"version": "v2", "url": url})
        assert_clean_failure(run, before, status, body, 424, "process not found")
        assert "shareProcessNamespace" in body["error"]
    assert upstream.count("/files/index.html") == 0


def test_never_signals_itself(tmp_path: Path, file_dir: Path, upstream: UpstreamServer) -> None:
    """A processName matching this very process (and its parents) must not signal it."""
    own = " ".join(psutil.Process().cmdline())
    url = upstream.add_file("index.html", NEW)
    with PluginRun(signal_config(file_dir, own), tmp_path / "s") as run:
        status, body = run.call({"version": "v2", "url": url})
    # SIGHUP would have killed this test process; being here is half the assertion
    assert status == 424, body
    assert (file_dir / "index.html").read_bytes() == OLD


def test_disk_full_is_507(tmp_path: Path, upstream: UpstreamServer) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    game = None
    try:
        (small / "index.html").write_bytes(OLD)
        game = FakeGame(tmp_path, small / "index.html")
        url = upstream.url("huge/index.html?size=300000&length=0")
        before = dir_listing(small)
        with PluginRun(signal_config(small, game.tag), tmp_path / "state") as run:
            status, body = run.call({"version": "v2", "url": url})
            assert_clean_failure(run, before, status, body, 507, "disk of fileDir is full")
        assert game.report()["hups"] == 0
    finally:
        if game is not None:
            game.stop()
        subprocess.run(["umount", str(small)], check=True)


# -- success -----------------------------------------------------------------------
def test_signal_update_reloads_the_game(run: PluginRun, upstream: UpstreamServer,
                                        file_dir: Path, game: FakeGame) -> None:
    url = upstream.add_file("index.html", NEW)
    sha = hashlib.sha256(NEW).hexdigest()
    status, body = run.call({"version": "v2", "url": url, "sha256": sha.upper()})
    assert status == 200, body
    assert body["status"] == "updated" and body["bytes"] == len(NEW) and body["sha256"] == sha
    assert body["reloadDetails"]["pids"] == [game.proc.pid]
    report = game.wait_for(lambda r: r["hups"] == 1)
    assert report["content"] == NEW.decode()
    assert (file_dir / "index.html").read_bytes() == NEW
    # kidecar's own files (the version marker, the history) live in the state dir
    assert sorted(p.name for p in file_dir.iterdir()) == ["index.html"]
    assert (run.ctx.state_dir / "hot-update-applied.marker").exists()
    record = run.results()[0]
    assert (record.version, record.url, record.success, record.sha256) == ("v2", url, True, sha)
    snap = run.status()
    assert (snap["version"], snap["url"], snap["state"], snap["file"]) == (
        "v2", url, "idle", "index.html")
    assert snap["history"][0]["version"] == "v2"
    assert run.gauges["kidecar_hot_update_last_success"] == 1.0


def test_repost_same_version_is_cheap(run: PluginRun, upstream: UpstreamServer,
                                      game: FakeGame) -> None:
    url = upstream.add_file("index.html", NEW)
    assert run.call({"version": "v2", "url": url})[0] == 200
    game.wait_for(lambda r: r["hups"] == 1)
    status, body = run.call({"version": "v2", "url": url})
    assert status == 200 and body["status"] == "unchanged", body
    assert upstream.count("/files/index.html") == 1, "a re-post must not download again"
    assert game.report()["hups"] == 1
    assert len(run.results()) == 1
    # the same version from another URL is a new update
    other = upstream.add_file("v2/index.html", NEW)
    assert run.call({"version": "v2", "url": other})[1]["status"] == "updated"


def test_redirects_are_followed(run: PluginRun, upstream: UpstreamServer, file_dir: Path,
                                game: FakeGame) -> None:
    upstream.add_file("index.html", NEW)
    status, body = run.call({"version": "v3",
                             "url": upstream.url("redirect/3/files/index.html")})
    assert status == 200, body
    assert upstream.count("/files/index.html") == 1
    assert (file_dir / "index.html").read_bytes() == NEW


def test_second_update_while_one_runs_is_409(tmp_path: Path, file_dir: Path,
                                             upstream: UpstreamServer, game: FakeGame) -> None:
    size = 600_000
    slow = upstream.url(f"slow/index.html?size={size}&rate=1000000")
    with signal_run(tmp_path, file_dir, game) as run:
        first: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: first.update(
            zip(("status", "body"), run.call({"version": "v5", "url": slow}), strict=True)))
        worker.start()
        snap = wait_until(lambda: (s := run.status())["progress"] and
                          s["progress"]["bytes"] > 0 and s, what="download progress")
        assert snap["state"] == "downloading" and snap["progress"]["total"] == size
        assert snap["running"]["version"] == "v5"
        status, body = run.call({"version": "v6", "url": upstream.add_file("x.html", NEW)})
        assert status == 409 and "already running (updating to v5)" in body["error"], body
        assert (file_dir / "index.html").read_bytes() == OLD
        assert upstream.count("/files/x.html") == 0
        assert any(r == "HotUpdateRejected" and "409" in m for r, m, _ in run.events())
        worker.join(30)
        assert first["status"] == 200, first
        assert (file_dir / "index.html").stat().st_size == size
        assert [r.version for r in run.results()] == ["v5"]
    game.wait_for(lambda r: r["hups"] == 1)


def test_leftover_temp_files_are_removed_at_start(tmp_path: Path, file_dir: Path,
                                                  game: FakeGame) -> None:
    (file_dir / ".kidecar-tmp-abc123").write_bytes(b"partial")
    with signal_run(tmp_path, file_dir, game):
        assert sorted(p.name for p in file_dir.iterdir()) == ["index.html"]


def test_interrupted_reload_puts_the_previous_file_back(tmp_path: Path, file_dir: Path,
                                                        game: FakeGame) -> None:
    """A crash between rename and reload leaves a backup; the next start restores it."""
    (file_dir / ".kidecar-prev-index.html").write_bytes(OLD)
    (file_dir / "index.html").write_bytes(NEW)
    with signal_run(tmp_path, file_dir, game):
        assert dir_listing(file_dir) == {"index.html": OLD}


def test_status_reports_progress_of_a_large_download(tmp_path: Path, file_dir: Path,
                                                     upstream: UpstreamServer,
                                                     game: FakeGame) -> None:
    size = 8 << 20
    url = upstream.url(f"slow/big.bin?size={size}&rate=20000000")
    with signal_run(tmp_path, file_dir, game) as run:
        worker = threading.Thread(target=run.call, args=({"version": "v9", "url": url},))
        worker.start()
        seen = set()
        while worker.is_alive():
            progress = run.status()["progress"]
            if progress and progress["bytes"]:
                seen.add(progress["bytes"])
                assert progress["total"] == size
        worker.join()
        assert len(seen) >= 3, seen
        assert run.status()["version"] == "v9"
    digest = hashlib.sha256((file_dir / "big.bin").read_bytes()).hexdigest()
    assert digest == pattern_sha256(size)


# -- request mode ------------------------------------------------------------------------
def test_request_mode_retries_until_the_game_answers(tmp_path: Path, file_dir: Path,
                                                     upstream: UpstreamServer) -> None:
    upstream.reload_failures = 3
    url = upstream.add_file("index.html", NEW)
    cfg = request_config(file_dir, upstream.url("reload"))
    with PluginRun(cfg, tmp_path / "s") as run:
        status, body = run.call({"version": "v2", "url": url})
    assert status == 200, body
    assert upstream.reload_calls == 4
    assert body["reloadDetails"]["attempts"] == 4
    assert [a.get("status") for a in body["reloadDetails"]["history"]] == [500, 500, 500, 200]
    assert "on attempt 4" in body["reload"]
    assert ("POST", "/reload") in upstream.methods
    assert (file_dir / "index.html").read_bytes() == NEW


def test_request_mode_failing_until_deadline_puts_old_file_back(
        tmp_path: Path, file_dir: Path, upstream: UpstreamServer) -> None:
    upstream.reload_failures = 10_000
    upstream.reload_status = 503
    url = upstream.add_file("index.html", NEW)
    before = dir_listing(file_dir)
    cfg = request_config(file_dir, upstream.url("reload"), deadline=1.5)
    with PluginRun(cfg, tmp_path / "s") as run:
        status, body = run.call({"version": "v2", "url": url})
        assert_clean_failure(run, before, status, body, 502, "answered 503, expected 2xx")
        assert "previous file was put back" in body["error"]
        assert body["attempts"] == upstream.reload_calls >= 3
        assert body["stage"] == "reload"


def test_request_mode_unreachable_game_is_424(tmp_path: Path, file_dir: Path,
                                              upstream: UpstreamServer) -> None:
    url = upstream.add_file("index.html", NEW)
    before = dir_listing(file_dir)
    cfg = request_config(file_dir, f"http://127.0.0.1:{free_port()}/reload", deadline=1.0)
    with PluginRun(cfg, tmp_path / "s") as run:
        status, body = run.call({"version": "v2", "url": url})
        assert_clean_failure(run, before, status, body, 424, "never answered")


def test_file_urls_with_local_storage(tmp_path: Path, file_dir: Path) -> None:
    source = tmp_path / "src" / "my game.cfg"
    source.parent.mkdir()
    source.write_bytes(NEW)
    cfg = request_config(file_dir, "http://127.0.0.1:1/reload", allowFileUrls=True)
    cfg["loadPatchType"] = "signal"
    game = FakeGame(tmp_path, file_dir / "my game.cfg")
    try:
        cfg["signal"] = {"processName": game.tag}
        with PluginRun(cfg, tmp_path / "s") as run:
            status, body = run.call({"version": "v2",
                                     "url": "file://" + str(source).replace(" ", "%20")})
        assert status == 200, body
        assert (file_dir / "my game.cfg").read_bytes() == NEW
        game.wait_for(lambda r: r["content"] == NEW.decode())
    finally:
        game.stop()


def test_stop_lets_a_running_update_finish(tmp_path: Path, file_dir: Path,
                                           upstream: UpstreamServer, game: FakeGame) -> None:
    """SIGTERM: the caller of an in-flight update still gets its answer (within the grace)."""
    slow = upstream.url("slow/index.html?size=300000&rate=600000")
    with signal_run(tmp_path, file_dir, game) as run:
        result: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: result.update(
            zip(("status", "body"), run.call({"version": "v7", "url": slow}), strict=True)))
        worker.start()
        wait_until(lambda: run.status()["state"] == "downloading", what="download start")
        run.ctx.stop_requested.set()
        run.plugin.stop()
        run.thread.join(5)
        assert not run.thread.is_alive(), "run() must return promptly on stop"
        worker.join(30)
        assert result["status"] == 200, result
    assert (file_dir / "index.html").stat().st_size == 300000


_MEMORY_PROBE = """
import resource, sys
from pathlib import Path
from workers.hot_update.download import DownloadLimits, download
limits = DownloadLimits(max_bytes=1 << 31, stall_timeout=10)
warm = download(sys.argv[1], Path(sys.argv[3]), limits)  # imports, pools, first buffers
warm.temp_path.unlink()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
big = download(sys.argv[2], Path(sys.argv[3]), limits, expected_sha256=sys.argv[4])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(big.size, (after - before) // 1024)
"""


@pytest.mark.slow
def test_memory_stays_flat_whatever_the_size(tmp_path: Path, upstream: UpstreamServer) -> None:
    size = 256 << 20
    small = upstream.url("huge/warm.bin?size=1048576")
    big = upstream.url(f"huge/big.bin?size={size}&length=0")
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, small, big, str(tmp_path),
                          pattern_sha256(size)], capture_output=True, text=True, check=True,
                         timeout=300)
    downloaded, growth_mib = map(int, out.stdout.split())
    assert downloaded == size
    assert growth_mib <= 8, f"peak RSS grew by {growth_mib} MiB for a {size >> 20} MiB download"


_FORKED_SIBLINGS = """
import os, signal, subprocess, sys, time
from kidecar_supervisor.plugin_kit.reload import find_processes
marker = sys.argv[1]
sibling = os.fork()  # like the supervisor's other children: forked, same command line
if sibling == 0:
    time.sleep(30)
    os._exit(0)
game = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
time.sleep(0.3)
found = find_processes(marker)
print(found == [game.pid], sibling in found, os.getpid() in found)
game.kill()
os.kill(sibling, signal.SIGKILL)
"""


def test_kidecars_own_forked_processes_are_never_targets() -> None:
    """processName matching the sidecar's own command line finds only other programs."""
    marker = "shared-marker-7f3a"
    out = subprocess.run([sys.executable, "-c", _FORKED_SIBLINGS, marker], capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout.split() == ["True", "False", "False"], out.stdout + out.stderr


def test_repost_with_a_checksum_not_yet_verified_downloads_again(
        run: PluginRun, upstream: UpstreamServer) -> None:
    url = upstream.add_file("index.html", NEW)
    assert run.call({"version": "v2", "url": url})[1]["status"] == "updated"
    sha = hashlib.sha256(NEW).hexdigest()
    status, body = run.call({"version": "v2", "url": url, "sha256": sha})
    assert status == 200 and body["status"] == "updated" and body["sha256"] == sha, body
    assert upstream.count("/files/index.html") == 2
    assert run.call({"version": "v2", "url": url, "sha256": sha})[1]["status"] == "unchanged"
    assert upstream.count("/files/index.html") == 2


def test_a_large_download_does_not_fill_the_page_cache(tmp_path: Path, file_dir: Path,
                                                       upstream: UpstreamServer,
                                                       game: FakeGame) -> None:
    """Page cache counts against the sidecar's memory limit: written pages are dropped."""
    size = 128 << 20
    url = upstream.url(f"huge/big.bin?size={size}")
    with signal_run(tmp_path, file_dir, game) as run:
        status, body = run.call({"version": "v8", "url": url, "sha256": pattern_sha256(size)})
        assert status == 200, body
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES",
                          str(file_dir / "big.bin")], capture_output=True, text=True, check=True)
    resident = int(out.stdout.split()[0])
    assert resident <= 24 << 20, f"{resident >> 20} MiB of the file stayed in the page cache"


def test_an_upstream_dripping_bytes_still_meets_the_deadline(
        tmp_path: Path, file_dir: Path, upstream: UpstreamServer, game: FakeGame) -> None:
    """A byte at a time resets every read timeout; the whole-download deadline still holds."""
    before = dir_listing(file_dir)
    drip = upstream.url("slow/index.html?size=100000&rate=40")
    with signal_run(tmp_path, file_dir, game, downloadDeadlineSeconds=1) as run:
        began = time.monotonic()
        status, body = run.call({"version": "v2", "url": drip})
        assert time.monotonic() - began < 10
        assert_clean_failure(run, before, status, body, 504, "downloadDeadlineSeconds")


def test_an_install_failure_leaves_no_temp_file(
        tmp_path: Path, file_dir: Path, upstream: UpstreamServer, game: FakeGame) -> None:
    (file_dir / "index.html").unlink()
    (file_dir / "index.html").mkdir()  # the target is a directory: cannot be replaced
    before = dir_listing(file_dir)
    url = upstream.add_file("index.html", NEW)
    with signal_run(tmp_path, file_dir, game) as run:
        status, body = run.call({"version": "v2", "url": url})
        assert status == 500 and "cannot put index.html into place" in body["error"]
        assert dir_listing(file_dir) == before
        assert not [p for p in file_dir.iterdir() if p.name.startswith(".kidecar-tmp-")]


def test_fileDir_busy_with_another_instance_is_409_at_once(
        tmp_path: Path, file_dir: Path, upstream: UpstreamServer, game: FakeGame) -> None:
    """During a hot upgrade the other kidecar holds fileDir: refuse, don't queue behind it."""
    import fcntl
    import os

    url = upstream.add_file("index.html", NEW)
    with signal_run(tmp_path, file_dir, game) as run:
        fd = os.open(file_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # as the other instance's update would
            began = time.monotonic()
            status, body = run.call({"version": "v2", "url": url})
            assert time.monotonic() - began < 2
            assert status == 409 and "another kidecar instance" in body["error"]
            assert run.results() == []  # a conflict is not a result
            assert run.status()["state"] != "downloading"
        finally:
            os.close(fd)
        status, body = run.call({"version": "v2", "url": url})
        assert status == 200, body


def test_url_with_a_bad_port_is_400(tmp_path: Path, file_dir: Path, game: FakeGame) -> None:
    with signal_run(tmp_path, file_dir, game) as run:
        for url in ("http://127.0.0.1:99999/a.txt", "http://exa mple/a.txt"):
            status, body = run.call({"version": "v2", "url": url})
            assert status == 400, (url, body)


def test_a_recycle_waits_for_the_desired_version_follower_to_note_the_outcome(
        run: PluginRun, upstream: UpstreamServer, game: FakeGame) -> None:
    """An update the follower ran asks for a fresh process only once the follower is
    done with it (noted a refused value as failed): a recycle before that made the
    fresh process apply the refused build once more (CI, session 23)."""
    asked: list[str] = []
    run.ctx._recycle_cb = asked.append
    url = upstream.add_file("index.html", NEW)
    with run.plugin._holding_recycle():  # as the follower holds it while it considers
        status, body = run.call({"version": "v2", "url": url})
        assert status == 200, body
        assert asked == [], "recycled while the follower still had the outcome to note"
    assert len(asked) == 1 and "update to v2 settled" in asked[0], asked
    newer = upstream.add_file("v3.html", b"v3\n")
    status, body = run.call({"version": "v3", "url": newer})  # no holder: at once
    assert status == 200 and len(asked) == 2, (body, asked)
