"""The Go kidecar's documents as they are (issue 13 §1): `kidecar validate` accepts them
and `kidecar run` runs them, every Go key doing what it means.

tests/support/fixtures/go-kidecar-config.yaml uses every Go key kidecar reads: a binary
fetched from its downloadURL (checksum, permissions) and then supervised, a hot update
reloading the game through request {address, port}, a probe reading the state with a
gjson path, podOwner and jsonPathConfigs, resources beyond CPU/Memory.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.support.game_endpoint import GameEndpoint
from tests.support.sidecar_process import start_sidecar
from tests.support.upstream_server import UpstreamServer

FIXTURES = Path(__file__).resolve().parents[1] / "support" / "fixtures"
GO_CONFIG = FIXTURES / "go-kidecar-config.yaml"
GO_SIDECARCONFIG = FIXTURES / "go-sidecarconfig.yaml"
CLI = [sys.executable, "-m", "kidecar_supervisor.cli"]
TOOL = b"#!/bin/sh\necho \"tool started mode=$TOOL_MODE args=$*\"\nexec sleep 600\n"


def kidecar(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def _env(upstream: UpstreamServer, game: GameEndpoint, tmp_path: Path,
         sha256: str) -> dict[str, str]:
    (tmp_path / "tool-dir").mkdir(exist_ok=True)
    (tmp_path / "game").mkdir(exist_ok=True)
    return {"TOOL_DIR": str(tmp_path / "tool-dir"), "TOOL_SHA256": sha256,
            "TOOL_URL": upstream.add_file("tool", TOOL), "UPSTREAM_PORT": str(upstream.port),
            "GAME_DIR": str(tmp_path / "game"), "GAME_PORT": str(game.port)}


def test_validate_accepts_the_go_config_and_shows_its_informational_keys(tmp_path: Path) -> None:
    with UpstreamServer() as upstream:
        game = GameEndpoint()
        try:
            env = _env(upstream, game, tmp_path, hashlib.sha256(TOOL).hexdigest())
            result = kidecar("validate", "--this-machine", str(GO_CONFIG), env=env)
        finally:
            game.stop()
    assert result.returncode == 0, result.stderr
    assert "info: plugins[0].binary.version: 1.0.0 (informational)" in result.stdout
    assert "plugins[0].binary.downloadURL: fetched to" in result.stdout
    assert "'ephemeral-storage': '256Mi'" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("ok: ")


def test_the_go_config_runs_every_key(tmp_path: Path) -> None:
    game = GameEndpoint()
    game.set("/state", body='{"game": {"rooms": [{"state": "idle"}]}}')
    with UpstreamServer() as upstream:
        env = _env(upstream, game, tmp_path, hashlib.sha256(TOOL).hexdigest())
        sidecar = start_sidecar(GO_CONFIG, tmp_path, env=env, wait_ready=True, timeout=40)
        try:
            # downloadURL: fetched once (checksum checked), mode 700, then exec'd as the plugin
            tool = Path(env["TOOL_DIR"]) / "tool"
            sidecar.wait_for(lambda: "tool started mode=demo args=--serve" in sidecar.log(),
                             what="the fetched tool to run")
            assert stat.S_IMODE(tool.stat().st_mode) == 0o700
            assert tool.read_bytes() == TOOL and upstream.count("/files/tool") == 1
            assert [p.name for p in tool.parent.iterdir()] == ["tool"]  # no temp file left
            assert sidecar.plugin("fetched-tool")["state"] == "Running"
            # request {address, port}: the reload call goes to 127.0.0.1:<port>/reload
            url = upstream.add_file("index.html", b"v2\n")
            answer = sidecar.post("/hot-update", data={"version": "v2", "url": url})
            assert answer.status_code == 200, answer.text
            assert upstream.count("/reload") == 1
            assert (Path(env["GAME_DIR"]) / "index.html").read_bytes() == b"v2\n"
            # gjson jsonPath: the probe reads the state out of the game's JSON
            sidecar.wait_for(lambda: sidecar.plugin("http_probe")["infos"]["endpoints"][0]
                             .get("appliedState") == "idle", what="the probed state")
        finally:
            assert sidecar.stop() == 0
            game.stop()


def test_a_bad_checksum_never_starts_the_download_and_leaves_nothing(tmp_path: Path) -> None:
    game = GameEndpoint()
    with UpstreamServer() as upstream:
        env = _env(upstream, game, tmp_path, "0" * 64)
        sidecar = start_sidecar(GO_CONFIG, tmp_path, env=env, timeout=40)
        try:
            sidecar.wait_for(lambda: "sha256 mismatch" in sidecar.log(),
                             what="the checksum failure in the log")
            assert list(Path(env["TOOL_DIR"]).iterdir()) == []
            assert sidecar.plugin("hot_update")["state"] == "Running"  # the others unharmed
        finally:
            sidecar.stop()
            game.stop()


def test_a_sidecarconfig_document_is_a_config_source(tmp_path: Path) -> None:
    result = kidecar("validate", str(GO_SIDECARCONFIG))
    assert result.returncode == 0, result.stderr
    assert "plugins: hot_update (bootOrder 1), http_probe (bootOrder 2)" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(GO_SIDECARCONFIG.read_text().replace("probeIntervalSeconds: 5",
                                                        "probeIntervalSeconds: -5"))
    result = kidecar("validate", str(bad))
    assert result.returncode == 1
    assert "spec.kidecar.plugins[1].config.probeIntervalSeconds" in result.stderr


def test_kidecar_runs_a_sidecarconfig_document(tmp_path: Path) -> None:
    """`kidecar run --config` on the Go kidecar's custom resource runs its spec.kidecar."""
    files = tmp_path / "files"
    files.mkdir()
    document = {
        "apiVersion": "serverless.vke.volcengine.com/v1alpha1", "kind": "SidecarConfig",
        "metadata": {"name": "game"},
        "spec": {"injection": {"selector": {"matchLabels": {"app": "game"}},
                               "injectKidecar": True, "shareProcessNamespace": True},
                 "kidecar": {"plugins": [{"name": "hot_update", "config": {
                     "loadPatchType": "request", "fileDir": str(files),
                     "request": {"address": "127.0.0.1/reload", "port": 0},
                     "storageConfig": {"type": "Local"}}}],
                     "restartPolicy": "Always", "sidecarStartOrder": "Before"}}}
    with UpstreamServer() as upstream:
        reload = document["spec"]["kidecar"]["plugins"][0]["config"]["request"]
        reload["port"] = upstream.port
        sidecar = start_sidecar(document, tmp_path, wait_ready=True, timeout=40)
        try:
            url = upstream.add_file("index.html", b"v2\n")
            answer = sidecar.post("/hot-update", data={"version": "v2", "url": url})
            assert answer.status_code == 200, answer.text
            assert upstream.count("/reload") == 1
            assert (files / "index.html").read_bytes() == b"v2\n"
        finally:
            assert sidecar.stop() == 0
