"""Retries of the same hot update are 200, never a spurious 409 (issue 17, finding 6).

A request for the version already applied is a cheap 200 however many clients
send it at once; a request for the update running right now (same version and
URL) joins it and answers with its outcome; only a request for something else
while an update runs is a 409.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.fake_game import FakeGame
from tests.support.hot_update_harness import PluginRun, signal_config, wait_until
from tests.support.sidecar_process import start_sidecar
from tests.support.upstream_server import UpstreamServer

OLD = b"<h1>version 1</h1>\n"
NEW = b"<h1>version 2</h1>\n"


def _in_parallel(count: int, call: Any) -> list[Any]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: call(), range(count)))


def test_retries_of_the_running_update_join_it(tmp_path: Path, file_dir: Path,
                                               upstream: UpstreamServer, game: FakeGame) -> None:
    size = 500_000
    slow = upstream.url(f"slow/index.html?size={size}&rate=1000000")
    with PluginRun(signal_config(file_dir, game.tag), tmp_path / "state") as run:
        owner: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: owner.update(
            zip(("status", "body"), run.call({"version": "v5", "url": slow}), strict=True)))
        worker.start()
        wait_until(lambda: (s := run.status())["progress"] and s["progress"]["bytes"] > 0,
                   what="download progress")
        other = run.call({"version": "v6", "url": upstream.add_file("x.html", NEW)})
        assert other[0] == 409 and "(updating to v5)" in other[1]["error"], other
        assert other[1]["running"]["version"] == "v5"
        unverified = run.call({"version": "v5", "url": slow, "sha256": "ab" * 32})
        assert unverified[0] == 409, "a checksum the running update does not check is no retry"

        joined = _in_parallel(8, lambda: run.call({"version": "v5", "url": slow}))
        worker.join(30)
        assert owner["status"] == 200 and owner["body"]["status"] == "updated", owner
        assert [status for status, _ in joined] == [200] * 8, joined
        assert all(body["joined"] and body["status"] == "updated" and body["version"] == "v5"
                   for _, body in joined)
        assert upstream.count("/slow/index.html") == 1, "joiners never download again"
        assert [r.version for r in run.results()] == ["v5"], "one update, one result"
    game.wait_for(lambda r: r["hups"] == 1)


def test_joiners_get_the_failure_of_the_update_they_joined(
        tmp_path: Path, file_dir: Path, upstream: UpstreamServer, game: FakeGame) -> None:
    stall = upstream.url("stall/index.html?after=1024&length=100000")
    config = signal_config(file_dir, game.tag, downloadTimeoutSeconds=1)
    with PluginRun(config, tmp_path / "state") as run:
        results = _in_parallel(6, lambda: run.call({"version": "v7", "url": stall}))
        assert Counter(status for status, _ in results) == {504: 6}, results
        assert sum(1 for _, body in results if body.get("joined")) >= 1
        assert upstream.count("/stall/index.html") == 1
        assert (file_dir / "index.html").read_bytes() == OLD
        assert [(r.version, r.success) for r in run.results()] == [("v7", False)]


@pytest.mark.slow
def test_many_parallel_posts_of_the_applied_version_are_all_200(
        tmp_path: Path, file_dir: Path, upstream: UpstreamServer, game: FakeGame) -> None:
    """The issue's run: 20 clients posting the applied version over HTTP, none gets a 409."""
    url = upstream.add_file("index.html", NEW)
    config = {"plugins": [{"name": "hot_update", "config": signal_config(file_dir, game.tag)}]}
    sidecar = start_sidecar(config, tmp_path, wait_ready=True)
    try:
        first = sidecar.post("/hot-update", data={"version": "v2", "url": url}, timeout=60)
        assert first.status_code == 200 and first.json()["status"] == "updated", first.text
        statuses: Counter[int] = Counter()
        bodies: Counter[str] = Counter()
        lock = threading.Lock()

        def client() -> None:
            with requests.Session() as session:
                for _ in range(200):
                    answer = session.post(f"{sidecar.url}/hot-update",
                                          data={"version": "v2", "url": url}, timeout=60)
                    with lock:
                        statuses[answer.status_code] += 1
                        bodies[answer.json().get("status", answer.text)] += 1

        threads = [threading.Thread(target=client) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        assert statuses == {200: 4000}, (statuses, bodies)
        assert bodies == {"unchanged": 4000}
        assert upstream.count("/files/index.html") == 1, "the applied version is never fetched"
        assert (file_dir / "index.html").read_bytes() == NEW
        metrics = sidecar.get("/metrics").text
        assert [line for line in metrics.splitlines()
                if line.startswith("kidecar_hot_update_unrecorded_results")
                and line.endswith(" 0.0")], "the unrecorded-results gauge is published"
    finally:
        assert sidecar.stop() == 0
