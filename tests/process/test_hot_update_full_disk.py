"""A full state dir: updates go on, the unstored result is visible, a restart never rolls back.

Issue 17, finding 4: with the state dir full, v2 and v3 were applied and
answered 200 'not recorded' while nothing else showed it, and after a restart
kidecar re-applied v1 over v3. Here the state dir is a real, tiny tmpfs,
filled to the last block.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kidecar_supervisor.pod_identity import PodIdentity
from kidecar_supervisor.storage.base import StorageConfig
from kidecar_supervisor.storage.local import LocalStore
from tests.support.fake_game import FakeGame
from tests.support.hot_update_harness import PluginRun, signal_config, wait_until
from tests.support.upstream_server import UpstreamServer
from workers.hot_update.version_marker import SLOT_BYTES, AppliedFile, VersionMarker

OLD = b"<h1>version 0</h1>\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_state(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(state)], check=True)
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], check=True)


def fill(directory: Path) -> Path:
    """Write until the filesystem refuses another byte; the filler, to free it later."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"x" * 4096)
        except OSError:
            pass
        try:
            while True:
                fh.write(b"x")
        except OSError:
            pass
    with pytest.raises(OSError):
        (directory / "one-more").write_bytes(b"y")
    return filler


def test_full_state_dir_updates_are_visible_and_a_restart_keeps_the_newest(
        tmp_path: Path, small_state: Path, file_dir: Path, upstream: UpstreamServer,
        game: FakeGame, caplog: pytest.LogCaptureFixture) -> None:
    urls = {v: upstream.add_file(f"{v}/index.html", f"<h1>{v}</h1>\n".encode())
            for v in ("v1", "v2", "v3")}
    config = signal_config(file_dir, game.tag)
    with PluginRun(config, small_state) as run:
        assert run.call({"version": "v1", "url": urls["v1"]})[0] == 200
        filler = fill(small_state)
        with caplog.at_level(logging.ERROR, logger="kidecar.hot_update.recorder"):
            for version in ("v2", "v3"):
                status, body = run.call({"version": version, "url": urls[version]})
                assert status == 200, body
                assert body["recorded"].startswith("not recorded"), body
                assert body["recordedParts"] == {"store": False}
        assert run.gauges["kidecar_hot_update_unrecorded_results"] == 2.0
        assert [u["version"] for u in run.status()["unrecorded"]] == ["v2", "v3"]
        assert sum("cannot record the hot update result" in r.getMessage()
                   for r in caplog.records) == 2
        assert run.store.latest_for_pod("hot_update").version == "v1"
    assert (file_dir / "index.html").read_bytes() == b"<h1>v3</h1>\n"

    # a restart with the disk still full: the store says v1, the game has v3
    store = LocalStore(StorageConfig(), PodIdentity("pod-a", "default"), small_state,
                       workload="game-a")
    with PluginRun(config, small_state, store=store) as run:
        restore = run.status()["restore"]
        assert restore["state"] == "kept-newer" and restore["version"] == "v3", restore
        assert restore["recordedVersion"] == "v1"
        assert run.status()["version"] == "v3"
        assert (file_dir / "index.html").read_bytes() == b"<h1>v3</h1>\n", "rolled back!"
        assert upstream.count("/files/v1/index.html") == 1, "v1 was never fetched again"
        # space again: the kept result reaches the store without anyone posting anything
        filler.unlink()
        wait_until(lambda: (r := run.store.latest_for_pod("hot_update")) and r.version == "v3",
                   timeout=20, what="the kept v3 result recorded")
        assert run.gauges["kidecar_hot_update_unrecorded_results"] == 0.0
        assert run.status()["unrecorded"] == []


def test_no_room_for_the_marker_refuses_before_touching_the_game(
        tmp_path: Path, small_state: Path, file_dir: Path, upstream: UpstreamServer,
        game: FakeGame) -> None:
    """A state dir full from the start: without a marker a restart could roll back."""
    store = LocalStore(StorageConfig(), PodIdentity("pod-a", "default"), tmp_path / "db")
    fill(small_state)
    with PluginRun(signal_config(file_dir, game.tag), small_state, store=store) as run:
        status, body = run.call({"version": "v2", "url": upstream.add_file("index.html", b"2")})
        assert status == 507 and body["stage"] == "state", body
        assert "no room for the version marker" in body["error"]
    assert (file_dir / "index.html").read_bytes() == OLD
    assert sorted(p.name for p in file_dir.iterdir()) == ["index.html"], "no temp file left"
    assert game.report()["hups"] == 0


def test_the_marker_is_written_in_place_on_a_full_disk(tmp_path: Path,
                                                       small_state: Path) -> None:
    marker = VersionMarker(small_state / "m.marker")
    marker.ensure()
    fill(small_state)
    (tmp_path / "index.html").write_bytes(b"three")
    info = (tmp_path / "index.html").stat()
    applied = AppliedFile(version="v3", url="http://127.0.0.1/v3/index.html",
                          file_name="index.html", size=info.st_size, mtime_ns=info.st_mtime_ns,
                          at=3.0)
    marker.write(applied)
    assert VersionMarker(small_state / "m.marker").in_place(tmp_path) == applied
    assert marker.path.stat().st_size == 2 * SLOT_BYTES
