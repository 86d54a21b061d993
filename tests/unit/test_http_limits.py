"""The HTTP layer's limits as pure functions: head verdicts, probe routing, JSON depth, config."""

from __future__ import annotations

import pytest

from kidecar_supervisor.config import HttpSettings, parse_config
from kidecar_supervisor.config_reader import ConfigError
from kidecar_supervisor.http_limits import BodyRefused, check_fields, json_depth
from kidecar_supervisor.http_worker import (
    ConnectionLimits,
    buffered_length,
    head_verdict,
    is_probe,
    json_error_response,
)

LIMITS = ConnectionLimits(max_request_line=100, max_head_bytes=400, max_body_bytes=1000)


@pytest.mark.parametrize("head, verdict", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n", None),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", (0, "")),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody bytes", (0, "")),
    (b"GET /" + b"a" * 200, 414),
    (b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 100, 431),
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 100 + b"\r\n", 431),
])
def test_head_verdict(head: bytes, verdict: object) -> None:
    result = head_verdict(head, LIMITS)
    if isinstance(verdict, int):
        assert result is not None and result[0] == verdict
    else:
        assert result == verdict


def test_small_declared_bodies_are_gathered_before_a_thread() -> None:
    head = b"POST /hot-update HTTP/1.1\r\nContent-Length: 20\r\n\r\n"
    assert buffered_length(head, LIMITS) == len(head) + 20
    for other in (b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n",  # over the limit
                  b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                  b"POST / HTTP/1.1\r\nContent-Length: 20\r\nExpect: 100-continue\r\n\r\n",
                  b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
                  b"POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\n",
                  b"GET / HTTP/1.1\r\n\r\n"):
        assert buffered_length(other, LIMITS) == len(other)


@pytest.mark.parametrize("head, probe", [
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", True),
    (b"GET /readyz?verbose=1 HTTP/1.1\r\n\r\n", True),
    (b"HEAD /metrics HTTP/1.0\r\n\r\n", True),
    (b"GET /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\n", False),
    (b"GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", False),
    (b"POST /healthz HTTP/1.1\r\n\r\n", False),
    (b"GET /plugins HTTP/1.1\r\n\r\n", False),
    (b"GET /healthzz HTTP/1.1\r\n\r\n", False),
])
def test_probe_routing(head: bytes, probe: bool) -> None:
    assert is_probe(head) is probe


def test_json_error_response_is_complete_http() -> None:
    raw = json_error_response(431, 'too "big"')
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"Content-Length: %d" % len(body) in head and b"Connection: close" in head
    assert body == b'{"error": "too \\"big\\""}'


def test_json_depth_without_recursion() -> None:
    assert json_depth(b'{"a": 1}') == 1
    assert json_depth(b'{"a": [{"b": []}]}') == 4
    assert json_depth(b"[" * 100_000 + b"]" * 100_000) == 100_000
    # brackets inside strings (escaped quotes too) are not nesting
    assert json_depth(b'{"a": "[[[[\\"[[[", "b": "}}}"}') == 1


def test_check_fields_refuses_big_names_and_values() -> None:
    check_fields({"url": "u" * 100, "n": 3}, 100)
    for fields in ({"url": "u" * 101}, {"k" * 101: "v"}, {"url": "é" * 51}):
        with pytest.raises(BodyRefused) as caught:
            check_fields(fields, 100)
        assert caught.value.status == 413 and "http.maxFieldBytes" in caught.value.message


def test_http_limits_config_defaults_and_validation() -> None:
    assert parse_config({"plugins": []}).http == HttpSettings()
    http = parse_config({"http": {"maxBodyBytes": 1 << 20, "maxFieldBytes": 4096,
                                  "headerTimeoutSeconds": 2, "bodyTimeoutSeconds": 3,
                                  "maxConnections": 10, "allowNetworkMutations": True,
                                  "allowLoopbackWithoutToken": False},
                         "plugins": []}).http
    assert (http.max_body_bytes, http.max_field_bytes, http.header_timeout_seconds,
            http.body_timeout_seconds, http.max_connections) == (1 << 20, 4096, 2, 3, 10)
    assert http.allow_network_mutations and not http.allow_loopback_without_token
    for bad, where in (({"maxBodyBytes": 10}, "http.maxBodyBytes"),
                       ({"maxFieldBytes": 8192, "maxBodyBytes": 4096}, "http.maxFieldBytes"),
                       ({"headerTimeoutSeconds": 0}, "http.headerTimeoutSeconds"),
                       ({"maxConnections": 0}, "http.maxConnections"),
                       ({"allowNetworkMutations": "yes"}, "http.allowNetworkMutations"),
                       ({"maxBodyByte": 1}, "http.maxBodyByte")):
        with pytest.raises(ConfigError) as caught:
            parse_config({"http": bad, "plugins": []})
        assert caught.value.path == where, caught.value
