"""A real loopback HTTP server playing the game's state endpoint, for tests and benches.

Each path answers with its own ``Route`` (body, status, delay, optional
``flap`` list cycled per request); tests change routes at run time and read
the request log (path, monotonic time) to check who was probed when. Speaks
HTTP/1.1 with keep-alive, like a real game server would.

Run as a script (``python tests/game_endpoint.py --paths 50 --flap /p0``) it
serves ``/p0``..``/pN`` answering ``idle`` in a separate process (benchmarks
must not count the server's CPU as the plugin's) and prints its port.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _QuietServer(ThreadingHTTPServer):
    """Clients hanging up (probe timeouts, aborts) are expected, not tracebacks."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@dataclass
class Route:
    """What one path answers."""

    body: str = "None"
    status: int = 200
    delay: float = 0.0
    content_type: str = "text/plain"
    #: when set, successive requests get these bodies in turn (a flapping game)
    flap: list[str] = field(default_factory=list)
    #: answered (one per request, first first) before body/flap resume: a one-off blip
    next_bodies: list[str] = field(default_factory=list)
    served: int = 0


@dataclass(frozen=True)
class Hit:
    path: str
    method: str
    at: float
    headers: dict[str, str]


class GameEndpoint:
    """The server; ``url(path)`` for the config, ``set(path, ...)`` to change answers."""

    def __init__(self, port: int = 0, keep_log: bool = True) -> None:
        self.routes: dict[str, Route] = {"/": Route()}
        self.hits: list[Hit] = []
        self.keep_log = keep_log
        self.count = 0
        self.connections = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.start()

    # -- control ---------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self._port}{path}"

    def set(self, path: str = "/", **changes: object) -> Route:
        with self._lock:
            route = self.routes.setdefault(path, Route())
            for key, value in changes.items():
                if not hasattr(route, key):
                    raise AttributeError(f"Route has no {key!r}")
                setattr(route, key, value)
            return route

    def requests(self, path: str | None = None) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if path is None or h.path == path]

    def request_count(self, path: str | None = None) -> int:
        if path is None:
            with self._lock:
                return self.count
        return len(self.requests(path))

    def start(self) -> None:
        """(Re)start listening on the same port (SO_REUSEADDR)."""
        handler = _make_handler(self)
        server = _QuietServer(("127.0.0.1", self._port), handler)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()

    def stop(self) -> None:
        """Stop like a dying game: close open connections, refuse new ones."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self._lock:
            open_connections, self._open = list(self._open), set()
        for conn in open_connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    close = stop

    # -- serving -----------------------------------------------------------------
    def _answer(self, path: str, method: str, headers: dict[str, str]) -> tuple[Route, str]:
        with self._lock:
            self.count += 1
            if self.keep_log:
                self.hits.append(Hit(path, method, time.monotonic(), headers))
            route = self.routes.get(path)
            if route is None:
                return Route(body="not found", status=404), "not found"
            if route.next_bodies:
                body = route.next_bodies.pop(0)
            elif route.flap:
                body = route.flap[route.served % len(route.flap)]
            else:
                body = route.body
            route.served += 1
            return route, body


def _make_handler(game: GameEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            with game._lock:
                game.connections += 1
                game._open.add(self.connection)

        def finish(self) -> None:
            with game._lock:
                game._open.discard(self.connection)
            super().finish()

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            route, body = game._answer(self.path, self.command, dict(self.headers.items()))
            if route.delay:
                time.sleep(route.delay)
            data = body.encode()
            try:
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            except OSError:
                self.close_connection = True

        do_GET = do_POST = do_HEAD = do_PUT = _serve

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--paths", type=int, default=1)
    parser.add_argument("--flap", action="append", default=[])
    args = parser.parse_args()
    game = GameEndpoint(keep_log=False)
    for i in range(args.paths):
        game.set(f"/p{i}", body="idle")
    for path in args.flap:
        game.set(path, flap=["idle", "busy"])
    print(game.port, flush=True)
    try:
        sys.stdin.read()  # until the parent closes our stdin
    finally:
        game.stop()


if __name__ == "__main__":
    main()
