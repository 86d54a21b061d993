"""``POST /hot-update/rollback`` and ``kidecar rollback [--version V]`` on a real sidecar (issue 10 §1).

The route checks its input and who asks before anything reaches the plugin;
the plugin (hot_update's ``hot_update_rollback``) puts a kept version back,
reloads the game and answers like an update.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_game import FakeGame
from tests.support.hot_update_fixtures import sidecar_config
from tests.support.sidecar_process import REPO, Sidecar, start_sidecar
from tests.support.upstream_server import UpstreamServer

pytestmark = pytest.mark.slow

OLD = b"image default\n"
TOKEN = "rollback-token-0123456789abcdef"
@pytest.fixture
def sidecar(tmp_path: Path, file_dir: Path, game: FakeGame) -> Iterator[Sidecar]:
    running = start_sidecar(sidecar_config(file_dir, game, keep_versions=3), tmp_path, wait_ready=True)
    yield running
    assert running.stop() == 0
    assert running.alive_leftovers() == []


def kidecar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kidecar_supervisor.cli", *args],
                          capture_output=True, text=True, timeout=120, cwd=str(REPO))


def update(sidecar: Sidecar, upstream: UpstreamServer, version: str) -> None:
    url = upstream.add_file(f"{version}/index.html", f"game {version}\n".encode())
    response = sidecar.post("/hot-update", data={"version": version, "url": url})
    assert response.status_code == 200, response.text


def test_bad_input_is_refused_before_the_plugin(sidecar: Sidecar, upstream: UpstreamServer,
                                                file_dir: Path) -> None:
    update(sidecar, upstream, "v1")
    before = sidecar.get("/hot-update").json()
    typo = sidecar.post("/hot-update/rollback", data={"versoin": "v1"})
    assert typo.status_code == 400, typo.text
    assert "unknown field(s) versoin" in typo.json()["error"]
    empty = sidecar.post("/hot-update/rollback", json={"version": " "})
    assert empty.status_code == 400 and "must not be empty" in empty.json()["error"]
    not_text = sidecar.post("/hot-update/rollback", json={"version": 1})
    assert not_text.status_code == 400 and "must be a string" in not_text.json()["error"]
    not_object = sidecar.post("/hot-update/rollback", json=["v1"])
    assert not_object.status_code == 400, not_object.text
    wrong_method = sidecar.get("/hot-update/rollback")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()
    after = sidecar.get("/hot-update").json()
    assert (after["version"], after["history"]) == (before["version"], before["history"])
    assert (file_dir / "index.html").read_bytes() == b"game v1\n"


def test_a_rollback_needs_the_token_like_every_change(tmp_path: Path, file_dir: Path,
                                                      game: FakeGame) -> None:
    sidecar = start_sidecar(sidecar_config(file_dir, game, keep_versions=3,
                                           allowLoopbackWithoutToken=False), tmp_path,
                            env={"KIDECAR_TOKEN": TOKEN}, wait_ready=True)
    try:
        missing = sidecar.post("/hot-update/rollback")
        assert missing.status_code == 401 and "bearer token" in missing.json()["error"]
        wrong = kidecar("rollback", "--sidecar", sidecar.url, "--token", "nope")
        assert wrong.returncode == 1 and "HTTP 403" in wrong.stderr
        # with the token the request reaches the plugin, which has nothing to roll back to
        allowed = kidecar("rollback", "--sidecar", sidecar.url, "--token", TOKEN)
        assert allowed.returncode == 1
        assert "HTTP 409" in allowed.stderr, allowed.stderr
        assert "401" not in allowed.stderr and "403" not in allowed.stderr
    finally:
        assert sidecar.stop() == 0
    assert sidecar.alive_leftovers() == []


def test_cli_sends_an_empty_version_as_given(sidecar: Sidecar, upstream: UpstreamServer) -> None:
    """``--version ""`` is a mistake to report, not a request for the previous version."""
    update(sidecar, upstream, "v1")
    update(sidecar, upstream, "v2")
    empty = kidecar("rollback", "--sidecar", sidecar.url, "--version", "")
    assert empty.returncode == 1 and "HTTP 400" in empty.stderr, empty.stderr
    assert sidecar.get("/hot-update").json()["version"] == "v2"


def test_unreachable_sidecar_is_exit_3(tmp_path: Path) -> None:
    gone = kidecar("rollback", "--sidecar", "http://127.0.0.1:9", "--version", "v1")
    assert gone.returncode == 3 and "cannot reach the sidecar" in gone.stderr


def test_cli_rolls_back_to_the_previous_and_to_a_named_version(
        sidecar: Sidecar, upstream: UpstreamServer, file_dir: Path, game: FakeGame) -> None:
    for version in ("v1", "v2", "v3"):
        update(sidecar, upstream, version)
    kept = [k["version"] for k in sidecar.get("/hot-update").json()["kept"]]
    assert {"v1", "v2"} <= set(kept), kept

    previous = kidecar("rollback", "--sidecar", sidecar.url)
    assert previous.returncode == 0, previous.stderr
    assert json.loads(previous.stdout)["version"] == "v2"
    assert (file_dir / "index.html").read_bytes() == b"game v2\n"
    game.wait_for(lambda r: r["content"] == "game v2\n")

    named = kidecar("rollback", "--sidecar", sidecar.url, "--version", "v1")
    assert named.returncode == 0, named.stderr
    assert sidecar.get("/hot-update").json()["version"] == "v1"
    game.wait_for(lambda r: r["content"] == "game v1\n")

    unknown = sidecar.post("/hot-update/rollback", data={"version": "v9"})
    assert unknown.status_code == 404, unknown.text
    assert "v9" in unknown.json()["error"]
    assert (file_dir / "index.html").read_bytes() == b"game v1\n"  # nothing changed
