"""A tiny stand-in game server for the local demo (stdlib only).

It serves the file it was pointed at, and re-reads it only on SIGHUP, the
way nginx or a game server reloads its config: so after a hot update you see
the new content only if kidecar really signalled it. GET /state answers the
game's own state for http_probe ("idle" until the file says otherwise).

GET /version answers what it loaded, for hot_update's ``confirm`` (DESIGN §9):
``{"version": "v2", "lastReloadError": ""}``. The version is the file's
``<!-- version: v2 -->`` line. A file without one is refused, as a game refuses
a script that does not compile: it keeps serving the previous content and
reports the error, so kidecar rolls the update back (config/demo/files/broken/).
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION_LINE = re.compile(rb"<!--\s*version:\s*([A-Za-z0-9._-]+)\s*-->")

lock = threading.Lock()
content = b"(no content yet: post a hot update)\n"
version = ""
last_error = ""
reloads = 0


def load(path: Path) -> None:
    """Read the file; refuse it (keep the old content, report why) if it has no version."""
    global content, version, last_error, reloads
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"demo game: cannot read {path}: {exc}", flush=True)
        return
    found = VERSION_LINE.search(data)
    with lock:
        reloads += 1
        if found is None:
            last_error = f"{path.name} has no '<!-- version: ... -->' line: refused"
            print(f"demo game: {last_error} (still on {version or 'no version'})", flush=True)
            return
        content, version, last_error = data, found.group(1).decode(), ""
    print(f"demo game: loaded {path} version {version} ({len(data)} bytes, "
          f"reload #{reloads})", flush=True)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        with lock:
            if self.path == "/state":
                body, kind = b"idle\n", "text/plain"
            elif self.path == "/version":
                body = json.dumps({"version": version, "lastReloadError": last_error}).encode()
                kind = "application/json"
            else:
                body, kind = content, "text/html"
        self.send_response(200)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
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
