"""Pytest fixtures shared by the hot_update test modules.

Each module says what the file in place was before the update with its own
``OLD`` constant; ``file_dir`` reads it from the requesting module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_game import FakeGame
from tests.support.hot_update_harness import signal_config
from tests.support.upstream_server import UpstreamServer


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture
def file_dir(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    path = tmp_path / "downloads"
    path.mkdir()
    (path / "index.html").write_bytes(request.module.OLD)
    return path


@pytest.fixture
def game(tmp_path: Path, file_dir: Path) -> Iterator[FakeGame]:
    proc = FakeGame(tmp_path, file_dir / "index.html")
    yield proc
    proc.stop()


def sidecar_config(file_dir: Path, game: FakeGame, keep_versions: int | None = None,
                   **http: Any) -> dict[str, Any]:
    """A ``kidecar run`` config: hot_update reloading ``game`` with SIGHUP, Local
    storage; keyword arguments go under ``http:``."""
    extra: dict[str, Any] = {} if keep_versions is None else {"keepVersions": keep_versions}
    document: dict[str, Any] = {"plugins": [{"name": "hot_update", "config": signal_config(
        file_dir, game.tag, **extra)}]}
    if http:
        document["http"] = http
    return document
