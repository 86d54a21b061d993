"""Watch mode: notice changes in dstDir by polling, report each burst once.

Polling (size, mtime, inode of every file) rather than inotify keeps kidecar
free of new dependencies and works on any volume type. A burst is a run of
changes with no quiet gap of ``debounce`` seconds; it is reported once, after
the gap, so 20 files written one after another cause one reload, not 20.
Names matching an ``ignore`` pattern (any path component) are invisible:
by default hidden names, i.e. the temp files atomic writers rename from.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger("kidecar.file_sync.watch")

Snapshot = dict[str, tuple[int, int, int]]


def take_snapshot(root: Path, ignore: Iterable[str]) -> Snapshot:
    """{relative path: (size, mtime_ns, inode)} of every non-ignored file under ``root``."""
    patterns = tuple(ignore)
    found: Snapshot = {}
    for current, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not _ignored(d, patterns)]
        for name in files:
            if _ignored(name, patterns):
                continue
            path = os.path.join(current, name)
            try:
                info = os.stat(path)
            except OSError:
                continue  # vanished between listing and stat: the next poll sees it
            found[os.path.relpath(path, root)] = (info.st_size, info.st_mtime_ns, info.st_ino)
    return found


def _ignored(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def changed_paths(before: Snapshot, after: Snapshot) -> set[str]:
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


class ChangeWatcher:
    """Calls ``on_burst(paths)`` once per debounced burst of changes under ``root``."""

    def __init__(self, root: Path, on_burst: Callable[[list[str]], None], *,
                 debounce: float, interval: float, ignore: Iterable[str],
                 stop: threading.Event) -> None:
        self.root = root
        self.on_burst = on_burst
        self.debounce = debounce
        self.interval = interval
        self.ignore = tuple(ignore)
        self.stop = stop
        self.bursts = 0
        self._baseline: Snapshot = {}

    def reset(self) -> None:
        """Take the current state as "seen" (call after kidecar's own changes)."""
        self._baseline = take_snapshot(self.root, self.ignore)

    def run(self) -> None:
        """Poll until ``stop`` is set."""
        last = self._baseline
        pending: set[str] = set()
        last_change = 0.0
        while not self.stop.wait(self.interval):
            current = take_snapshot(self.root, self.ignore)
            if current != last:
                pending |= changed_paths(last, current)
                last = current
                last_change = time.monotonic()
                continue
            if pending and time.monotonic() - last_change >= self.debounce:
                self.bursts += 1
                burst, pending = sorted(pending), set()
                log.info("%d path(s) changed in %s: %s", len(burst), self.root,
                         ", ".join(burst[:10]) + (" ..." if len(burst) > 10 else ""))
                self.on_burst(burst)
