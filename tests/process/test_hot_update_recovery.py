"""hot_update recovery from the Local store: re-apply before ready, pod first, then workload."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from tests.support.fake_game import FakeGame
from tests.support.hot_update_harness import PluginRun, dir_listing, signal_config, wait_until
from tests.support.upstream_server import UpstreamServer

OLD = b"image default\n"
NEW = b"hot update v2\n"



def apply_v2(tmp_path: Path, file_dir: Path, game: FakeGame, url: str) -> None:
    with PluginRun(signal_config(file_dir, game.tag), tmp_path / "state") as run:
        status, body = run.call({"version": "v2", "url": url})
        assert status == 200, body
    game.wait_for(lambda r: r["hups"] == 1)


def lose_the_file(file_dir: Path) -> None:
    """A new container without the old emptyDir content: the image's default file only."""
    for entry in file_dir.iterdir():
        entry.unlink()
    (file_dir / "index.html").write_bytes(OLD)


def lose_the_kept_copies(state_dir: Path) -> None:
    """The state dir's byte-exact copies are gone too: a restore has to download."""
    shutil.rmtree(state_dir / "hot-update-kept")


def test_restart_reapplies_own_version_before_ready(tmp_path: Path, file_dir: Path,
                                                    upstream: UpstreamServer,
                                                    game: FakeGame) -> None:
    url = upstream.add_file("index.html", NEW)
    apply_v2(tmp_path, file_dir, game, url)
    lose_the_file(file_dir)
    run = PluginRun(signal_config(file_dir, game.tag), tmp_path / "state").start()
    try:
        # ready only after the restore: at this moment the file must already be v2
        assert (file_dir / "index.html").read_bytes() == NEW
        # from the byte-exact copy kept in the state dir: nothing downloaded again
        assert upstream.count("/files/index.html") == 1
        game.wait_for(lambda r: r["hups"] == 2 and r["content"] == NEW.decode())
        snap = run.status()
        assert snap["version"] == "v2" and snap["state"] == "idle"
        assert snap["restore"]["state"] == "applied" and snap["restore"]["scope"] == "pod"
        assert [(r.version, r.success) for r in run.results()] == [("v2", True), ("v2", True)]
        # re-recorded with the original time: a restore never looks newer than it is
        restored, original = run.results()
        assert restored.timestamp == original.timestamp
        # the restored version counts as applied: a re-post is cheap
        assert run.call({"version": "v2", "url": url})[1]["status"] == "unchanged"
    finally:
        run.stop()


def test_restart_downloads_when_the_kept_copy_is_gone(tmp_path: Path, file_dir: Path,
                                                      upstream: UpstreamServer,
                                                      game: FakeGame) -> None:
    url = upstream.add_file("index.html", NEW)
    apply_v2(tmp_path, file_dir, game, url)
    lose_the_file(file_dir)
    lose_the_kept_copies(tmp_path / "state")
    with PluginRun(signal_config(file_dir, game.tag), tmp_path / "state") as run:
        assert (file_dir / "index.html").read_bytes() == NEW
        assert run.status()["restore"]["state"] == "applied"
    assert upstream.count("/files/index.html") == 2


def test_restart_with_file_in_place_downloads_nothing(tmp_path: Path, file_dir: Path,
                                                      upstream: UpstreamServer,
                                                      game: FakeGame) -> None:
    url = upstream.add_file("index.html", NEW)
    apply_v2(tmp_path, file_dir, game, url)
    with PluginRun(signal_config(file_dir, game.tag), tmp_path / "state") as run:
        snap = run.status()
        assert snap["version"] == "v2" and snap["restore"]["state"] == "in-place"
        assert len(snap["history"]) == 1 and snap["history"][0]["version"] == "v2"
    assert upstream.count("/files/index.html") == 1
    assert game.report()["hups"] == 1


def test_new_pod_of_same_workload_starts_on_newest_version(tmp_path: Path, file_dir: Path,
                                                           upstream: UpstreamServer,
                                                           game: FakeGame) -> None:
    url = upstream.add_file("index.html", NEW)
    apply_v2(tmp_path, file_dir, game, url)
    lose_the_file(file_dir)
    with PluginRun(signal_config(file_dir, game.tag), tmp_path / "state", pod="pod-b") as run:
        assert (file_dir / "index.html").read_bytes() == NEW
        snap = run.status()
        assert snap["restore"]["scope"] == "workload" and snap["version"] == "v2"
        assert run.store.latest_for_pod("hot_update").version == "v2"  # now its own record


def test_other_workload_is_never_restored(tmp_path: Path, file_dir: Path,
                                          upstream: UpstreamServer, game: FakeGame) -> None:
    url = upstream.add_file("index.html", NEW)
    apply_v2(tmp_path, file_dir, game, url)
    lose_the_file(file_dir)
    with PluginRun(signal_config(file_dir, game.tag), tmp_path / "state", pod="pod-x",
                   workload="other-game") as run:
        assert run.status()["restore"]["state"] == "nothing-recorded"
        assert run.status()["version"] == ""
    assert (file_dir / "index.html").read_bytes() == OLD
    assert upstream.count("/files/index.html") == 1


def test_restore_of_a_dead_url_gives_up_and_becomes_ready(tmp_path: Path, file_dir: Path,
                                                          upstream: UpstreamServer,
                                                          game: FakeGame) -> None:
    url = upstream.add_file("index.html", NEW)
    apply_v2(tmp_path, file_dir, game, url)
    lose_the_file(file_dir)
    lose_the_kept_copies(tmp_path / "state")
    del upstream.files["index.html"]  # the URL now answers 404
    before = dir_listing(file_dir)
    started = time.monotonic()
    cfg = signal_config(file_dir, game.tag, restoreAttempts=2)
    with PluginRun(cfg, tmp_path / "state") as run:
        assert time.monotonic() - started < 15
        snap = run.status()
        assert snap["restore"]["state"] == "failed" and "404" in snap["restore"]["error"]
        assert snap["state"] == "failed" and snap["version"] == ""
        last = run.results()[0]
        assert last.success is False and "restore after 2 attempt(s)" in last.message
        assert dir_listing(file_dir) == before
    assert upstream.count("/files/index.html") == 3  # 1 update + 2 restore attempts
    assert game.report()["hups"] == 1


def test_restore_when_game_not_started_yet_places_the_file(tmp_path: Path, file_dir: Path,
                                                           upstream: UpstreamServer) -> None:
    """The sidecar starts before the game: no process to signal is fine, it reads at start."""
    url = upstream.add_file("index.html", NEW)
    game = FakeGame(tmp_path, file_dir / "index.html")
    try:
        apply_v2(tmp_path, file_dir, game, url)
    finally:
        game.stop()
    lose_the_file(file_dir)
    with PluginRun(signal_config(file_dir, game.tag), tmp_path / "state") as run:
        assert (file_dir / "index.html").read_bytes() == NEW
        assert "not running yet" in run.status()["restore"]["reload"]


def test_update_during_restore_is_409(tmp_path: Path, file_dir: Path,
                                      upstream: UpstreamServer, game: FakeGame) -> None:
    size = 400_000
    apply_v2(tmp_path, file_dir, game, upstream.add_file("index.html", b"x" * size))
    lose_the_file(file_dir)
    lose_the_kept_copies(tmp_path / "state")
    upstream.throttle = 400_000  # the restore takes about a second
    run = PluginRun(signal_config(file_dir, game.tag), tmp_path / "state").start(wait_ready=False)
    try:
        wait_until(lambda: run.status()["state"] == "downloading", what="restore download")
        assert not run.ready.is_set()
        status, body = run.call({"version": "v3", "url": upstream.add_file("v3.html", NEW)})
        assert status == 409 and "restoring v2" in body["error"], body
        assert run.ready.wait(30)
        assert (file_dir / "index.html").stat().st_size == size
    finally:
        run.stop()


def test_stop_during_restore_aborts_it(tmp_path: Path, file_dir: Path,
                                       upstream: UpstreamServer, game: FakeGame) -> None:
    apply_v2(tmp_path, file_dir, game, upstream.add_file("index.html", NEW * 100_000))
    lose_the_file(file_dir)
    lose_the_kept_copies(tmp_path / "state")
    upstream.throttle = 200_000  # the restore would take 7 s
    run = PluginRun(signal_config(file_dir, game.tag), tmp_path / "state").start(wait_ready=False)
    wait_until(lambda: run.status()["state"] == "downloading", what="restore download")
    started = time.monotonic()
    run.stop()
    assert time.monotonic() - started < 3
    assert dir_listing(file_dir) == {"index.html": OLD}


def test_history_survives_a_plugin_restart(tmp_path: Path, file_dir: Path,
                                           upstream: UpstreamServer, game: FakeGame) -> None:
    """Issue 17, finding 9: after a restart GET /hot-update showed only the last entry."""
    config = signal_config(file_dir, game.tag)
    with PluginRun(config, tmp_path / "state") as run:
        for version in ("v1", "v2"):
            url = upstream.add_file(f"{version}/index.html", version.encode())
            assert run.call({"version": version, "url": url})[0] == 200
        gone = upstream.url("status/404/index.html")
        assert run.call({"version": "v3", "url": gone})[0] == 502
        before = [(h["version"], h["success"]) for h in run.status()["history"]]
    assert before == [("v3", False), ("v2", True), ("v1", True)]
    with PluginRun(config, tmp_path / "state") as again:
        after = [(h["version"], h["success"]) for h in again.status()["history"]]
        assert after == before
        assert again.status()["restore"]["state"] == "in-place"


def test_the_manifest_older_versions_kept_in_fileDir_moves_to_the_state_dir(
        tmp_path: Path, file_dir: Path, upstream: UpstreamServer, game: FakeGame) -> None:
    """fileDir is the game's (DESIGN §5): kidecar 0.1's manifest there is taken over, then gone."""
    import json

    url = upstream.add_file("index.html", NEW)
    apply_v2(tmp_path, file_dir, game, url)
    (tmp_path / "state" / "hot-update-applied.marker").unlink()  # as 0.1 left the state dir
    info = (file_dir / "index.html").stat()
    (file_dir / ".kidecar-hot-update.json").write_text(json.dumps({
        "version": "v2", "url": url, "file_name": "index.html", "size": info.st_size,
        "mtime_ns": info.st_mtime_ns, "sha256": ""}))
    with PluginRun(signal_config(file_dir, game.tag), tmp_path / "state") as run:
        assert run.status()["restore"]["state"] == "in-place"
        assert run.call({"version": "v2", "url": url})[1]["status"] == "unchanged"
    assert sorted(p.name for p in file_dir.iterdir()) == ["index.html"]
    assert upstream.count("/files/index.html") == 1, "nothing downloaded again"


def test_a_backup_link_kidecar_0_2_left_in_fileDir_is_put_back_and_removed(
        tmp_path: Path, file_dir: Path, upstream: UpstreamServer, game: FakeGame) -> None:
    """0.2 kept the previous file as .kidecar-prev-<name> in fileDir until the reload ended;
    one a crash left there means the reload never finished: the previous file goes back."""
    (file_dir / ".kidecar-prev-index.html").write_bytes(OLD)
    (file_dir / "index.html").write_bytes(NEW)  # put in place, never reloaded
    with PluginRun(signal_config(file_dir, game.tag), tmp_path / "state") as run:
        assert dir_listing(file_dir) == {"index.html": OLD}
        url = upstream.add_file("index.html", NEW)
        assert run.call({"version": "v2", "url": url})[0] == 200
    assert dir_listing(file_dir) == {"index.html": NEW}
