"""One probe against a real loopback game endpoint: states, failures, keep-alive."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from kidecar_supervisor.plugin_kit.jsonpath import compile_path
from tests.support.game_endpoint import GameEndpoint
from workers.http_probe.config import EndpointConfig, JsonPathConfig
from workers.http_probe.prober import MAX_BODY, HttpProber, ProbeError, render_value


@pytest.fixture
def game() -> Iterator[GameEndpoint]:
    server = GameEndpoint()
    yield server
    server.stop()


def endpoint(url: str, **kw: Any) -> EndpointConfig:
    return EndpointConfig(url=url, **kw)


def jp(path: str, field_type: str = "string") -> JsonPathConfig:
    return JsonPathConfig(compile_path(path), field_type)


def test_state_is_the_trimmed_body(game: GameEndpoint) -> None:
    game.set("/", body="  WaitToBeDeleted \r\n")
    result = HttpProber(endpoint(game.url())).probe()
    assert result.ok and result.state == "WaitToBeDeleted" and result.status == 200


def test_state_at_json_path(game: GameEndpoint) -> None:
    game.set("/s", body=json.dumps({"game": {"state": "busy", "players": 3, "open": True}}))
    prober = HttpProber(endpoint(game.url("/s"), json_path=jp("$.game.state")))
    assert prober.probe().state == "busy"
    prober = HttpProber(endpoint(game.url("/s"), json_path=jp("$.game.players", "int")))
    assert prober.probe().state == "3"
    prober = HttpProber(endpoint(game.url("/s"), json_path=jp("$.game.open", "bool")))
    assert prober.probe().state == "true"


@pytest.mark.parametrize(
    ("body", "path", "words"),
    [
        ("not json", "$.state", "not JSON"),
        ('{"other": 1}', "$.state", "no value at $.state"),
        ('{"state": "x"}', "$.state.deeper", "no value at"),
    ],
)
def test_json_problems_are_failures(game: GameEndpoint, body: str, path: str, words: str) -> None:
    game.set("/", body=body)
    result = HttpProber(endpoint(game.url(), json_path=jp(path))).probe()
    assert not result.ok and words in result.error


def test_unexpected_status_is_a_failure(game: GameEndpoint) -> None:
    game.set("/", body="idle", status=503)
    result = HttpProber(endpoint(game.url())).probe()
    assert not result.ok and result.error == "status 503, expected 200"
    game.set("/", status=204, body="")
    assert HttpProber(endpoint(game.url(), expected_status_code=204)).probe().ok


def test_timeout_bounds_the_whole_probe(game: GameEndpoint) -> None:
    game.set("/", delay=2.0)
    result = HttpProber(endpoint(game.url(), timeout=0.3)).probe()
    assert not result.ok and "timed out after 0.3s" in result.error
    assert 0.25 <= result.elapsed < 1.0


def test_refused_connection_is_a_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = HttpProber(endpoint(f"http://127.0.0.1:{port}/")).probe()
    assert not result.ok and result.error == "connection refused"


def test_connection_is_kept_alive_and_survives_a_server_restart(game: GameEndpoint) -> None:
    game.set("/", body="idle")
    prober = HttpProber(endpoint(game.url()))
    for _ in range(5):
        assert prober.probe().state == "idle"
    assert game.connections == 1 and game.request_count() == 5
    game.stop()
    assert prober.probe().error == "connection refused"
    game.start()
    assert prober.probe().state == "idle"


def test_method_and_headers_are_sent(game: GameEndpoint) -> None:
    game.set("/m", body="ok")
    cfg = endpoint(game.url("/m"), method="POST", headers=(("X-Probe", "yes"),))
    assert HttpProber(cfg).probe().state == "ok"
    (hit,) = game.requests("/m")
    assert hit.method == "POST" and hit.headers["X-Probe"] == "yes"
    assert hit.headers["User-Agent"] == "kidecar-http-probe"


def test_head_probe_has_an_empty_state(game: GameEndpoint) -> None:
    game.set("/", body="ignored")
    result = HttpProber(endpoint(game.url(), method="HEAD")).probe()
    assert result.ok and result.state == ""


def test_huge_answer_is_a_failure(game: GameEndpoint) -> None:
    game.set("/", body="x" * (MAX_BODY + 10))
    result = HttpProber(endpoint(game.url())).probe()
    assert not result.ok and "larger than" in result.error


@pytest.mark.parametrize(
    ("value", "field_type", "expected"),
    [
        ("idle", "string", "idle"),
        (3, "string", "3"),
        (2.5, "string", "2.5"),
        (4.0, "number", "4"),
        ("7", "number", "7"),
        (True, "string", "true"),
        (None, "string", "null"),
        ({"b": 1, "a": [1]}, "string", '{"a":[1],"b":1}'),
        ("TRUE", "bool", "true"),
        (12.0, "int", "12"),
    ],
)
def test_render_value(value: Any, field_type: str, expected: str) -> None:
    assert render_value(value, jp("$.x", field_type)) == expected


@pytest.mark.parametrize(
    ("value", "field_type"),
    [("abc", "number"), (True, "number"), (2.5, "int"), ("yes", "bool"), ([1], "float"),
     ("nan", "number")],
)
def test_render_value_rejects_wrong_types(value: Any, field_type: str) -> None:
    with pytest.raises(ProbeError):
        render_value(value, jp("$.x", field_type))


def test_headers_dripped_a_byte_at_a_time_still_time_out() -> None:
    """Each byte restarts a socket timeout; the probe's own deadline must still hold."""
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    stop = threading.Event()

    def drip() -> None:
        conn, _ = server.accept()
        conn.recv(4096)
        try:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200:
                if stop.is_set():
                    break
                conn.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            pass
        conn.close()

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/"
    began = time.monotonic()
    result = HttpProber(endpoint(url, timeout=1.0)).probe()
    took = time.monotonic() - began
    stop.set()
    server.close()
    assert not result.ok and "timed out after 1s" in result.error, result
    assert took < 3.0, took
