"""The README's first command: config/local.yaml with its demo game, driven like a user would."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.support.sidecar_process import REPO, free_port, start_sidecar

pytestmark = pytest.mark.slow


def test_readme_demo_hot_updates_the_demo_game(tmp_path: Path) -> None:
    files_port, game_port = free_port(), free_port()
    www = tmp_path / "www"
    text = (REPO / "config" / "local.yaml").read_text()
    text = (text.replace('"8000"', f'"{files_port}"').replace('"8080"', f'"{game_port}"')
            .replace("127.0.0.1:8080", f"127.0.0.1:{game_port}")
            .replace("/tmp/kidecar-demo/www", str(www)))
    config = tmp_path / "local.yaml"
    config.write_text(text)
    sidecar = start_sidecar(config, tmp_path, wait_ready=True)
    game = f"http://127.0.0.1:{game_port}/"
    try:
        sidecar.wait_for(lambda: requests.get(game, timeout=2).ok, what="demo game up")
        # the file server is a binary plugin: running is not yet listening
        files = f"http://127.0.0.1:{files_port}"
        sidecar.wait_for(lambda: requests.get(f"{files}/v1/index.html", timeout=2).ok,
                         what="demo file server up")
        assert b"no content yet" in requests.get(game, timeout=5).content
        for version in ("v1", "v2"):
            url = f"http://127.0.0.1:{files_port}/{version}/index.html"
            answer = sidecar.post("/hot-update", data={"version": version, "url": url})
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "updated"
            expected = (REPO / "config/demo/files" / version / "index.html").read_bytes()
            # the game re-reads its file only on SIGHUP: new content proves the signal
            assert requests.get(game, timeout=5).content == expected
        status = sidecar.get("/hot-update").json()
        assert status["version"] == "v2" and [h["version"] for h in status["history"]][:2] == \
            ["v2", "v1"]
        probe = sidecar.wait_for(
            lambda: sidecar.plugin("http_probe")["infos"]["endpoints"][0]["appliedState"] == "idle",
            what="the probe saw the game idle")
        assert probe
    finally:
        sidecar.stop()
        assert sidecar.alive_leftovers() == []
