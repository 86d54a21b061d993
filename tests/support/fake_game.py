"""A stand-in game process for reload tests: re-reads its file on SIGHUP.

Run as a script (``python tests/support/fake_game.py --file F --report R --tag T``) it
writes a JSON report ``{"pid", "hups", "content", "loads", "version", "error"}`` at
start and after every SIGHUP; ``--tag`` only puts a unique marker on its command
line for ``processName`` to match. ``FakeGame`` starts one from a test and waits
for its report.

For confirmed hot updates (DESIGN §9) it can tell which version it loaded, on
``GET http://127.0.0.1:<--version-port>/version`` (``{"version": ..., "lastReloadError":
...}``) and/or in ``--version-file``. What it does with a file is up to the file, so a
test only serves different files: a JSON file ``{"version": "v2"}`` loads v2;
``{"version": "v3", "reject": "why"}`` is refused (the previous version stays, the
error is reported: a NACK); ``{"version": "v4", "silent": true}`` is loaded but never
reported (the old version is still reported: a timeout); ``{"version": "v5",
"crash": true}`` kills the game while loading it; ``{"version": "v6", "delay": 3}``
reports v6 only 3 s after loading it. Any other content has no version.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def _write(path: str, text: str) -> None:
    temp = path + ".tmp"
    with open(temp, "w") as out:
        out.write(text)
    os.replace(temp, path)


def _instructions(content: str | None) -> dict[str, Any]:
    try:
        doc = json.loads(content or "")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


class Game:
    """What the game loaded; shared by the signal loop and the version endpoint."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Lock()
        self.state: dict[str, Any] = {"pid": os.getpid(), "hups": 0, "content": None,
                                      "loads": [], "version": "", "error": ""}

    def load(self, reload: bool) -> None:
        content = _read(self.args.file)
        doc = _instructions(content)
        if doc.get("crash"):
            os._exit(3)  # dies loading the file, as a game with a bad script would
        with self.lock:
            state = self.state
            if reload:
                state["hups"] += 1
            state["content"] = content
            state["loads"].append(content)
            if doc.get("reject"):
                state["error"] = str(doc["reject"])
            elif doc.get("delay"):  # a slow loader: reports the version seconds later
                timer = threading.Timer(float(doc["delay"]), self._loaded,
                                        (str(doc.get("version", "")),))
                timer.daemon = True
                timer.start()
            elif not doc.get("silent"):
                state["version"] = str(doc.get("version", ""))
                state["error"] = ""
        self._publish()

    def _loaded(self, version: str) -> None:
        with self.lock:
            self.state["version"], self.state["error"] = version, ""
        self._publish()

    def _publish(self) -> None:
        with self.lock:
            report = dict(self.state)
        _write(self.args.report, json.dumps(report))
        if self.args.version_file:
            _write(self.args.version_file, report["version"])

    def version_doc(self) -> bytes:
        with self.lock:
            return json.dumps({"version": self.state["version"],
                               "lastReloadError": self.state["error"]}).encode()


def _serve(game: Game, port: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            body = game.version_doc()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--file", required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--tag", default="")
    parser.add_argument("--version-port", type=int, default=0)
    parser.add_argument("--version-file", default="")
    args = parser.parse_args()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, signal.SIGTERM, signal.SIGINT})
    game = Game(args)
    if args.version_port:
        _serve(game, args.version_port)
    game.load(reload=False)
    while True:
        received = signal.sigwait({signal.SIGHUP, signal.SIGTERM, signal.SIGINT})
        if received != signal.SIGHUP:
            return
        game.load(reload=True)


class FakeGame:
    """A running fake game; ``tag`` is the unique processName that matches it.

    ``version_port``: serve ``/version`` there (0: no endpoint); ``tag``: reuse the
    tag of a game this one replaces (a container the kubelet restarted).
    """

    def __init__(self, workdir: Path, file_path: Path, version_port: int = 0,
                 version_file: Path | None = None, tag: str = "") -> None:
        self.tag = tag or f"fake-game-{uuid.uuid4().hex[:12]}"
        self.workdir = workdir
        self.file_path = file_path
        self.version_port = version_port
        self.version_file = version_file
        self.version_url = f"http://127.0.0.1:{version_port}/version"
        self.report_path = workdir / f"{self.tag}.json"
        self.report_path.unlink(missing_ok=True)
        argv = [sys.executable, __file__, "--file", str(file_path), "--report",
                str(self.report_path), "--tag", self.tag]
        if version_port:
            argv += ["--version-port", str(version_port)]
        if version_file is not None:
            argv += ["--version-file", str(version_file)]
        self.proc = subprocess.Popen(argv)
        self.wait_for(lambda r: True)

    def restarted(self) -> FakeGame:
        """The same game started again (as the kubelet restarts a crashed container)."""
        return FakeGame(self.workdir, self.file_path, self.version_port, self.version_file,
                        self.tag)

    def report(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.report_path.read_text()))
        except (OSError, ValueError):
            return None

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            report = self.report()
            if report is not None and predicate(report):
                return report
            if self.proc.poll() is not None:
                raise AssertionError(f"fake game exited with {self.proc.returncode}")
            time.sleep(0.02)
        raise AssertionError(f"fake game report never matched; last: {self.report()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


if __name__ == "__main__":
    main()
