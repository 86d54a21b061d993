"""A tiny stand-in game server for the local demo (stdlib only).

It serves the file it was pointed at, and re-reads it only on SIGHUP, the
way nginx or a game server reloads its config: so after a hot update you see
the new content only if kidecar really signalled it. GET /state answers the
game's own state for http_probe ("idle" until the file says otherwise).
"""

from __future__ import annotations

import argparse
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

content = b"(no content yet: post a hot update)\n"
reloads = 0


def load(path: Path) -> None:
    global content, reloads
    try:
        content = path.read_bytes()
    except OSError as exc:
        print(f"demo game: cannot read {path}: {exc}", flush=True)
        return
    reloads += 1
    print(f"demo game: loaded {path} ({len(content)} bytes, reload #{reloads})", flush=True)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        body = b"idle\n" if self.path == "/state" else content
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description="kidecar demo game")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--file", type=Path, required=True)
    args = parser.parse_args()
    args.file.parent.mkdir(parents=True, exist_ok=True)
    load(args.file)
    signal.signal(signal.SIGHUP, lambda *_: load(args.file))
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"demo game: serving {args.file} on http://127.0.0.1:{args.port}/", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
