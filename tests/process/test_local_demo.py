"""The README's first command: config/local.yaml with its demo game, driven like a user would."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.support.demo import start_demo
from tests.support.sidecar_process import REPO

pytestmark = pytest.mark.slow


def test_readme_demo_hot_updates_the_demo_game(tmp_path: Path) -> None:
    demo = start_demo(tmp_path)
    sidecar, game, files = demo.sidecar, demo.game + "/", demo.files
    try:
        assert b"no content yet" in requests.get(game, timeout=5).content
        for version in ("v1", "v2"):
            url = f"{files}/{version}/index.html"
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
