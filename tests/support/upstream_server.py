"""A real HTTP server on 127.0.0.1 for download and reload tests (no mocks).

One server, many behaviours chosen by the path, so a test can point a hot
update at exactly the misbehaviour it wants:

``/files/<name>``                       a registered file (``add_file``), 404 if unknown;
                                        paced at ``throttle`` bytes/s when that is set
``/status/<code>/<name>``               answers ``<code>`` with a short body
``/stall/<name>?after=N&length=L``      announces L bytes, sends N, then goes silent
``/slow/<name>?size=N&rate=BPS``        N pattern bytes at BPS bytes per second
``/huge/<name>?size=N&length=0|1``      N pattern bytes streamed (Content-Length if length=1)
``/truncated/<name>?size=N&length=L``   announces L bytes, sends N < L, closes
``/redirect/<n>/<path>``                n redirects, then ``/<path>``
``/loop/<name>``                        redirects to itself forever
``/reload``                             a game's reload endpoint: fails the first
                                        ``reload_failures`` calls with ``reload_status``

Every request is counted by path (``hits``). Pattern bytes are deterministic
(``pattern_sha256(size)`` gives their digest without holding them in memory).
"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_BLOCK = bytes(range(256)) * 256  # 64 KiB


def pattern_chunks(size: int, chunk: int = len(_BLOCK)) -> Iterator[bytes]:
    """The deterministic pattern body of ``size`` bytes, in chunks."""
    left = size
    while left > 0:
        piece = _BLOCK[: min(chunk, left, len(_BLOCK))]
        left -= len(piece)
        yield piece


def pattern_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for piece in pattern_chunks(size):
        digest.update(piece)
    return digest.hexdigest()


class UpstreamServer:
    """Start with ``with UpstreamServer() as srv:``; URLs via ``srv.url(path)``."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        self.methods: list[tuple[str, str]] = []
        self.reload_failures = 0
        self.reload_status = 500
        self.reload_calls = 0
        self.throttle = 0.0  # bytes per second for /files/, 0 = full speed
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.upstream = self
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def add_file(self, name: str, data: bytes) -> str:
        """Serve ``data`` at ``/files/<name>``; returns its URL."""
        self.files[name] = data
        return self.url(f"files/{name}")

    def count(self, path: str) -> int:
        return self.hits[path]

    def start(self) -> UpstreamServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> UpstreamServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_reload(self) -> int:
        with self._lock:
            self.reload_calls += 1
            return self.reload_status if self.reload_calls <= self.reload_failures else 200


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128
    upstream: UpstreamServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802 - stdlib name
        self._dispatch()

    # -- routing -------------------------------------------------------------
    def _dispatch(self) -> None:
        up = self.server.upstream
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        segments = parts.path.strip("/").split("/")
        with up._lock:
            up.hits[parts.path] += 1
            up.methods.append((self.command, parts.path))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        try:
            self._route(up, segments, query)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _route(self, up: UpstreamServer, seg: list[str], query: dict[str, str]) -> None:
        kind = seg[0]
        if kind == "files" and len(seg) >= 2:
            data = up.files.get("/".join(seg[1:]))
            if data is None:
                return self._simple(404, b"no such file\n")
            if up.throttle:
                chunk = max(1, min(65536, int(up.throttle / 20)))
                pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)]
                return self._body(200, pieces, len(data), pace=chunk / up.throttle)
            return self._body(200, [data], len(data))
        if kind == "status":
            return self._simple(int(seg[1]), f"status {seg[1]}\n".encode())
        if kind == "stall":
            return self._stall(up, int(query.get("after", "1024")),
                               int(query.get("length", "1048576")))
        if kind in ("slow", "huge", "truncated"):
            return self._stream(kind, query)
        if kind == "redirect":
            count = int(seg[1])
            rest = "/".join(seg[2:])
            target = f"/redirect/{count - 1}/{rest}" if count > 1 else f"/{rest}"
            return self._redirect(target)
        if kind == "loop":
            return self._redirect(self.path)
        if kind == "reload":
            status = up._next_reload()
            return self._simple(status, f"reload {status}\n".encode())
        return self._simple(404, b"unknown route\n")

    def _stream(self, kind: str, query: dict[str, str]) -> None:
        size = int(query.get("size", "1048576"))
        if kind == "slow":
            rate = float(query.get("rate", "65536"))
            chunk = max(1, min(65536, int(rate / 20)))
            return self._body(200, pattern_chunks(size, chunk), size, pace=chunk / rate)
        if kind == "truncated":
            return self._body(200, pattern_chunks(size), int(query.get("length", str(size * 2))))
        announce = size if query.get("length", "1") == "1" else None
        return self._body(200, pattern_chunks(size), announce)

    # -- responses -------------------------------------------------------------
    def _simple(self, status: int, body: bytes) -> None:
        self._body(status, [body], len(body))

    def _body(self, status: int, chunks: Any, length: int | None, pace: float = 0.0) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        for piece in chunks:
            self.wfile.write(piece)
            if pace and self.server.upstream.closing.wait(pace):
                return

    def _stall(self, up: UpstreamServer, after: int, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self.wfile.write(bytes(after))
        self.wfile.flush()
        up.closing.wait(120)

    def _redirect(self, target: str) -> None:
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True


def free_port() -> int:
    """A port nobody listens on right now (for connection-refused tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
