"""file_sync end to end: the real ``kidecar run`` process, a real game process, real signals."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from kidecar_supervisor.plugin_api import PodIdentity
from kidecar_supervisor.storage.base import StorageConfig
from kidecar_supervisor.storage.local import LocalStore
from tests.support.fake_game import FakeGame
from tests.support.sidecar_process import start_sidecar
from tests.support.upstream_server import UpstreamServer

pytestmark = pytest.mark.slow


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    src, dst = tmp_path / "image-files", tmp_path / "shared"
    (src / "lua").mkdir(parents=True)
    dst.mkdir()
    (src / "index.html").write_text("bundled v4")
    (src / "lua" / "init.lua").write_text("return 4")
    (dst / "index.html").write_text("old")
    return src, dst


def _config(src: Path, dst: Path, reload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"plugins": [{"name": "file_sync", "bootOrder": 0, "config": {
        "srcDir": str(src), "dstDir": str(dst), **reload, "versionEnv": "GAME_FILES_VERSION",
        "storageConfig": {"type": "Local"}, **extra}}], "restartPolicy": "Always"}


def test_sidecar_syncs_reloads_records_and_watches(tmp_path: Path) -> None:
    src, dst = _dirs(tmp_path)
    game = FakeGame(tmp_path, dst / "index.html")
    signal = {"loadPatchType": "signal",
              "signal": {"processName": game.tag, "signalName": "SIGHUP"}}
    config = _config(src, dst, signal, watch={"debounceSeconds": 0.5, "intervalSeconds": 0.1})
    sidecar = start_sidecar(config, tmp_path, env={"GAME_FILES_VERSION": "v4"}, wait_ready=True)
    try:
        report = game.wait_for(lambda r: r["hups"] == 1)
        assert report["content"] == "bundled v4"
        assert (dst / "lua" / "init.lua").read_text() == "return 4"
        infos = sidecar.wait_for(
            lambda: (i := sidecar.plugin("file_sync")["infos"]).get("state") == "watching" and i,
            what="file_sync infos")
        assert infos["version"] == "v4" and infos["copied"] == 2
        for i in range(20):  # another container drops files into the shared dir
            (dst / f"extra-{i}.dat").write_bytes(b"x" * i)
            time.sleep(0.01)
        game.wait_for(lambda r: r["hups"] == 2)
        time.sleep(1.5)
        assert game.report()["hups"] == 2  # type: ignore[index]
    finally:
        assert sidecar.stop() == 0
        game.stop()
    assert sidecar.alive_leftovers() == []
    store = LocalStore(StorageConfig(), PodIdentity(), sidecar.state_dir)
    try:
        record = store.latest_for_pod("file_sync")
    finally:
        store.close()
    assert record is not None and record.version == "v4" and record.success


def test_sidecar_request_mode_waits_for_the_game_to_answer(tmp_path: Path) -> None:
    src, dst = _dirs(tmp_path)
    with UpstreamServer() as game_api:
        game_api.reload_failures = 4  # the game is still booting
        game_api.reload_status = 503
        reload = {"loadPatchType": "request",
                  "request": {"url": game_api.url("reload"), "method": "GET"}}
        sidecar = start_sidecar(_config(src, dst, reload), tmp_path,
                                env={"GAME_FILES_VERSION": "v4"}, wait_ready=True)
        try:
            infos = sidecar.wait_for(
                lambda: (i := sidecar.plugin("file_sync")["infos"]).get("state") == "synced"
                and i, timeout=30, what="reload done")
            assert game_api.reload_calls == 5
            assert infos["lastReload"]["ok"] and "attempt 5" in infos["lastReload"]["message"]
        finally:
            assert sidecar.stop() == 0


def test_sidecar_with_a_missing_version_env_fails_the_plugin_clearly(tmp_path: Path) -> None:
    src, dst = _dirs(tmp_path)
    signal = {"loadPatchType": "signal", "signal": {"processName": "no-game-xyz"}}
    sidecar = start_sidecar(_config(src, dst, signal), tmp_path,
                            env={"GAME_FILES_VERSION": ""})
    try:
        info = sidecar.wait_for(
            lambda: "GAME_FILES_VERSION is not set" in (sidecar.plugin("file_sync").get(
                "lastError") or "") and sidecar.plugin("file_sync"), what="init error")
        assert info["state"] != "Running"
        assert (dst / "index.html").read_text() == "old"  # nothing copied without a version
    finally:
        sidecar.stop()
