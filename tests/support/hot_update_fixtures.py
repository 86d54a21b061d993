"""Pytest fixtures shared by the hot_update test modules.

Each module says what the file in place was before the update with its own
``OLD`` constant; ``file_dir`` reads it from the requesting module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_game import FakeGame
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
