"""The pod watch's protocol against a loopback stand-in of the API server's pods endpoint.

A real HTTP server on 127.0.0.1 answers the list and the watch requests the way
kube-apiserver does (JSON list with a resourceVersion; a chunked stream of
watch events), so what is checked is what goes over the wire: the field
selector on the pod's name, a watch resumed from the last resourceVersion
(after a normal end and after a 500), and a relist after 410 Gone, whether
the 410 comes as the HTTP status or as an ERROR event in the stream.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from kidecar_supervisor.storage.kube_api import KubeClient
from kidecar_supervisor.storage.kube_connection import Connection
from kidecar_supervisor.storage.pod_watch import PodWatch

KEY = "kidecar.io/desired-version"


def pod(value: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": "gs-0", "namespace": "ns", "resourceVersion": rv,
                         "annotations": {KEY: value}}}


class FakePods:
    """Scripted answers: ``lists`` and ``watches`` are consumed in order."""

    def __init__(self, lists: list[tuple[str, str]], watches: list[Any]) -> None:
        self.lists = lists
        self.watches = watches
        self.seen: list[dict[str, list[str]]] = []
        self.lock = threading.Lock()
        self.done = threading.Event()


def serve(fake: FakePods) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            query = parse_qs(urlsplit(self.path).query)
            with fake.lock:
                fake.seen.append(query)
                if "watch" not in query:
                    value, rv = fake.lists.pop(0)
                    return self._json(200, {"metadata": {"resourceVersion": rv},
                                            "items": [pod(value, rv)]})
                step = fake.watches.pop(0) if fake.watches else None
            if step is None:  # nothing scripted: hold the watch open until the test ends
                fake.done.wait(10)
                return self._json(200, {})
            if isinstance(step, int):
                return self._json(step, {"kind": "Status", "code": step})
            body = b"".join(json.dumps(e).encode() + b"\n" for e in step)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data: Any) -> None:
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        fake.done.set()
        server.shutdown()
        server.server_close()


def follow(fake: FakePods, expected: list[str]) -> PodWatch:
    """Start a watch on the fake and wait for the values ``expected`` in order."""
    gen = serve(fake)
    url = next(gen)
    watch = PodWatch(KubeClient(Connection.plain(url)), "ns", "gs-0", watch_seconds=5)
    watch.start()
    try:
        revision = 0
        for value in expected:
            deadline = 0
            while True:
                snap = watch.wait(KEY, revision, 10)
                revision = snap.revision
                if snap.value == value:
                    break
                deadline += 1
                assert deadline < 20, f"never saw {value!r}; last {snap.value!r}"
    finally:
        watch.stop()
        next(gen, None)
    return watch


def test_a_watch_resumes_from_the_last_resource_version_without_a_relist() -> None:
    fake = FakePods([("v1", "10")], [
        [{"type": "MODIFIED", "object": pod("v2", "11")},
         {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}],
        500,  # the API server stumbles: back off, resume from 15, no list
        [{"type": "MODIFIED", "object": pod("v3", "16")}],
    ])
    watch = follow(fake, ["v1", "v2", "v3"])
    assert watch.lists == 1 and watch.gone == 0 and watch.errors == 1
    watches = [q for q in fake.seen if "watch" in q]
    assert [q["resourceVersion"][0] for q in watches[:3]] == ["10", "15", "15"]
    assert all(q["fieldSelector"] == ["metadata.name=gs-0"] for q in fake.seen)
    assert all(q.get("allowWatchBookmarks") == ["true"] for q in watches)


@pytest.mark.parametrize("gone", [410, [{"type": "ERROR", "object": {
    "kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}]])
def test_410_gone_lists_again_and_the_change_made_meanwhile_is_seen(gone: Any) -> None:
    fake = FakePods([("v1", "10"), ("v2", "30")], [
        gone, [{"type": "MODIFIED", "object": pod("v3", "31")}]])
    watch = follow(fake, ["v1", "v2", "v3"])
    assert watch.lists == 2 and watch.gone == 1 and watch.errors == 0
    watches = [q["resourceVersion"][0] for q in fake.seen if "watch" in q]
    assert watches[:2] == ["10", "30"]
