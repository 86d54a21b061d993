"""A stand-in game process for reload tests: re-reads its file on SIGHUP.

Run as a script (``python tests/fake_game.py --file F --report R --tag T``) it
writes a JSON report ``{"pid", "hups", "content", "loads"}`` at start and after
every SIGHUP; ``--tag`` only puts a unique marker on its command line for
``processName`` to match. ``FakeGame`` starts one from a test and waits for
its report.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def _report(path: str, state: dict[str, Any]) -> None:
    temp = path + ".tmp"
    with open(temp, "w") as out:
        json.dump(state, out)
    os.replace(temp, path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--file", required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, signal.SIGTERM, signal.SIGINT})
    content = _read(args.file)
    state: dict[str, Any] = {"pid": os.getpid(), "hups": 0, "content": content,
                             "loads": [content]}
    _report(args.report, state)
    while True:
        received = signal.sigwait({signal.SIGHUP, signal.SIGTERM, signal.SIGINT})
        if received != signal.SIGHUP:
            return
        content = _read(args.file)
        state["hups"] += 1
        state["content"] = content
        state["loads"].append(content)
        _report(args.report, state)


class FakeGame:
    """A running fake game; ``tag`` is the unique processName that matches it."""

    def __init__(self, workdir: Path, file_path: Path) -> None:
        self.tag = f"fake-game-{uuid.uuid4().hex[:12]}"
        self.report_path = workdir / f"{self.tag}.json"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--file", str(file_path), "--report",
             str(self.report_path), "--tag", self.tag],
        )
        self.wait_for(lambda r: True)

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
