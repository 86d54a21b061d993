"""A game that accepts the reload connection and never answers is hung, not absent:
504 saying so, not 424 "is the game running?" (issue 14 §3)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from kidecar_supervisor.plugin_kit.reload import (
    GameNotRunning,
    ReloadError,
    RequestConfig,
    request_reload,
)


@pytest.fixture
def hung_game() -> Iterator[int]:
    """A loopback listener that accepts every connection, reads, and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def test_a_hung_reload_is_504_with_what_happened(hung_game: int) -> None:
    cfg = RequestConfig(url=f"http://127.0.0.1:{hung_game}/reload", timeout_seconds=0.3,
                        deadline_seconds=1.0)
    with pytest.raises(ReloadError) as caught:
        request_reload(cfg)
    err = caught.value
    assert not isinstance(err, GameNotRunning)
    assert err.status == 504
    assert "accepted" in err.message and "never answered" in err.message
    assert "hangs" in err.message
    assert all(a.get("hung") for a in err.fields["history"])


def test_a_reload_url_nobody_listens_on_is_still_424() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    cfg = RequestConfig(url=f"http://127.0.0.1:{port}/reload", timeout_seconds=0.3,
                        deadline_seconds=0.5)
    with pytest.raises(GameNotRunning) as caught:
        request_reload(cfg)
    assert caught.value.status == 424
