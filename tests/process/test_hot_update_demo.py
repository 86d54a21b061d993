"""The README's demo of a verified hot update: confirmed v1, v2; the broken build rolled back."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.support.demo import start_demo
from tests.support.sidecar_process import REPO

pytestmark = pytest.mark.slow


def test_demo_confirms_good_versions_and_rolls_back_the_broken_one(tmp_path: Path) -> None:
    demo = start_demo(tmp_path)
    sidecar, game, files = demo.sidecar, demo.game, demo.files
    www = tmp_path / "www"  # the demo's fileDir
    try:
        for version in ("v1", "v2"):
            answer = sidecar.post("/hot-update", data={
                "version": version, "url": f"{files}/{version}/index.html"})
            assert answer.status_code == 200 and answer.json()["outcome"] == "succeeded", \
                answer.text
            assert requests.get(f"{game}/version", timeout=5).json()["version"] == version
        v2 = (REPO / "config/demo/files/v2/index.html").read_bytes()
        refused = sidecar.post("/hot-update", data={
            "version": "v3", "url": f"{files}/broken/index.html"})
        assert refused.status_code == 424, refused.text
        body = refused.json()
        assert (body["outcome"], body["runningVersion"], body["refusedVersion"]) == (
            "rolledBack", "v2", "v3")
        assert "refused" in body["reason"]
        assert requests.get(game, timeout=5).content == v2
        assert (www / "index.html").read_bytes() == v2
        assert sorted(p.name for p in www.iterdir()) == ["index.html"]
        status = sidecar.get("/hot-update").json()
        assert (status["version"], status["stage"]) == ("v2", "rolledBack")
        assert [k["version"] for k in status["kept"]] == ["v2", "v1"]
    finally:
        sidecar.stop()
        assert sidecar.alive_leftovers() == []
