"""Issue 17, finding 2: request size limits; nothing a client sends restarts a plugin.

A real ``kidecar run`` with the hot_update plugin, inside a cgroup with the
manifests' limits (100m CPU, 128Mi): huge bodies, huge fields, deep JSON and
oversized heads are each answered with a JSON error, and the plugin, the HTTP
child and the supervisor come out of it untouched.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from tests.support.pod_limits import PodLimits, pod_limits
from tests.support.sidecar_process import Sidecar, start_sidecar

pytestmark = pytest.mark.slow

BIG = "x" * (256 * 1024)  # the field size that restarted hot_update


def _config(tmp_path: Path, **http: Any) -> dict[str, Any]:
    file_dir = tmp_path / "www"
    file_dir.mkdir(exist_ok=True)
    return {"http": http, "plugins": [{"name": "hot_update", "config": {
        "loadPatchType": "signal",
        "signal": {"processName": "no-such-game-process", "signalName": "SIGHUP"},
        "fileDir": str(file_dir), "storageConfig": {"type": "Local"}}}]}


def _raw(sidecar: Sidecar, data: bytes) -> tuple[int, bytes, bytes]:
    """Send raw bytes, read the answer until the server closes: (status, head, body)."""
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
                if b"\r\n\r\n" in received and _complete(received):
                    break
        except ConnectionResetError:
            pass
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


def _http_pid(sidecar: Sidecar) -> int:
    pid: int = sidecar.plugin("http")["pid"]
    return pid


def _untouched(sidecar: Sidecar, before: dict[str, Any]) -> None:
    after = sidecar.plugin("hot_update")
    assert (after["pid"], after["restarts"], after["state"]) == (
        before["pid"], before["restarts"], "Running"), after
    assert sidecar.get("/healthz").status_code == 200


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[tuple[Sidecar, PodLimits]]:
    with pod_limits() as limits:
        sidecar = start_sidecar(_config(tmp_path), tmp_path, limits=limits, wait_ready=True)
        try:
            yield sidecar, limits
        finally:
            sidecar.stop()
            assert sidecar.alive_leftovers() == [], sidecar.log()


def test_big_fields_are_refused_and_never_reach_the_plugin(limited) -> None:
    sidecar, limits = limited
    before = sidecar.wait_state("hot_update", "Running")
    # 17 such requests drove hot_update to Failed and /healthz to 503 (the issue)
    for i in range(20):
        field = ("url", "sha256", "unknownField")[i % 3]
        form = {"version": "v2", "url": "http://127.0.0.1:1/f.txt", field: BIG}
        response = (sidecar.post("/hot-update", json=form) if i % 2
                    else sidecar.post("/hot-update", data=form))
        assert response.status_code == 413, response.text
        assert "http.maxBodyBytes" in response.json()["error"]
    # a field over maxFieldBytes inside a body under maxBodyBytes: the field limit says no
    for field in ("url", "sha256", "other"):
        form = {"version": "v2", "url": "http://127.0.0.1:1/f.txt", field: "y" * 9000}
        for response in (sidecar.post("/hot-update", data=form),
                         sidecar.post("/hot-update", json=form)):
            assert response.status_code == 413, response.text
            assert f"field '{field}'" in response.json()["error"]
            assert "http.maxFieldBytes" in response.json()["error"]
    _untouched(sidecar, before)
    # a field under the limit still reaches the plugin (which judges it: not our 413)
    fine = sidecar.post("/hot-update", data={"version": "v2", "url": "ftp://" + "z" * 7000})
    assert fine.status_code == 400 and "maxFieldBytes" not in fine.text, fine.text
    _untouched(sidecar, before)
    assert limits.oom_kills() == 0


def test_a_60_mb_post_is_refused_before_its_body_is_read(limited) -> None:
    sidecar, limits = limited
    before = sidecar.wait_state("hot_update", "Running")
    http_pid = _http_pid(sidecar)
    # the head alone gets its 413: the server does not wait for (or read) 60 MB
    status, head, body = _raw(sidecar, b"POST /hot-update HTTP/1.1\r\nHost: x\r\n"
                                       b"Content-Type: application/x-www-form-urlencoded\r\n"
                                       b"Content-Length: 60000000\r\n\r\nversion=v2&url=")
    assert status == 413 and b"application/json" in head, head
    assert b"connection: close" in head.lower()
    assert json.loads(body)["limit"] == 64 * 1024
    # and a client that sends it all anyway: refused (or cut off), nothing grows or dies
    try:
        response = requests.post(sidecar.url + "/hot-update", data=b"a=" + b"b" * 60_000_000,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"},
                                 timeout=60)
        assert response.status_code == 413
    except requests.ConnectionError:
        pass  # the server answered 413 and closed while the client was still sending
    # chunked (no Content-Length): cut off by the streamed cap as soon as it passes the limit
    chunks = (b"a=" + b"b" * 65536 for _ in range(1000))
    try:
        response = requests.post(sidecar.url + "/hot-update", data=chunks, timeout=60,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 413, response.text
    except requests.ConnectionError:
        pass
    assert _http_pid(sidecar) == http_pid  # the HTTP child was not killed or restarted
    assert limits.oom_kills() == 0
    supervisor_rss = psutil.Process(sidecar.proc.pid).memory_info().rss
    assert supervisor_rss < 100 * 1024 * 1024, supervisor_rss
    _untouched(sidecar, before)


def test_deep_json_is_400_not_a_recursion_error(tmp_path: Path) -> None:
    # a body limit high enough that the nesting, not the size, is what is refused
    sidecar = start_sidecar(_config(tmp_path, maxBodyBytes=1 << 20), tmp_path)
    try:
        deep = "[" * 100_000 + "]" * 100_000
        for body in (deep, '{"version": ' + deep + "}", '{"a": "[[[[' + "[" * 1000 + '"}'):
            response = sidecar.post("/hot-update", data=body,
                                    headers={"Content-Type": "application/json"})
            if body.startswith('{"a"'):  # brackets inside a string are not nesting
                assert response.status_code != 400 or "nested" not in response.text
                continue
            assert response.status_code == 400, response.text
            assert "nested deeper than" in response.json()["error"]
        assert sidecar.get("/healthz").status_code == 200
    finally:
        sidecar.stop()


def test_oversized_heads_answer_json_431_and_414(tmp_path: Path) -> None:
    sidecar = start_sidecar({"plugins": []}, tmp_path)
    try:
        cases = [
            (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
            (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Many: a\r\n" * 200 + b"\r\n", 431),
            # every field within its limit, the head as a whole too large (one write)
            (b"GET / HTTP/1.1\r\nHost: x\r\n" + (b"X-Mo: " + b"a" * 4000 + b"\r\n") * 12
             + b"\r\n", 431),
            (b"GARBAGE\r\n\r\n", 400),
        ]
        for data, expected in cases:
            status, head, body = _raw(sidecar, data)
            assert status == expected, (expected, head)
            assert b"content-type: application/json" in head.lower(), head
            assert json.loads(body)["error"], body
        assert sidecar.get("/healthz").status_code == 200
    finally:
        sidecar.stop()


def test_concurrent_requests_at_the_limits_never_restart_the_plugin(tmp_path: Path) -> None:
    sidecar = start_sidecar(_config(tmp_path), tmp_path, wait_ready=True)
    try:
        before = sidecar.wait_state("hot_update", "Running")
        # every field under maxFieldBytes, the body under maxBodyBytes: all reach the plugin
        form = {"version": "v2", "url": "http://127.0.0.1:1/f.txt",
                **{f"f{i}": "x" * 8000 for i in range(7)}}

        def post(_: int) -> int:
            return sidecar.post("/hot-update", data=form, timeout=60).status_code

        with ThreadPoolExecutor(8) as pool:  # 8 = the HTTP thread count
            statuses = set(pool.map(post, range(48)))
        assert statuses == {400}, statuses  # the plugin's own "unknown field(s)" answer
        _untouched(sidecar, before)
    finally:
        sidecar.stop()
