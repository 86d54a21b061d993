"""A write-ahead journal on disk for Kubernetes writes that could not be made yet.

When the API server is unreachable a hot update still happens; its result
must reach the pod and the result ConfigMap later, even if the sidecar
restarts meanwhile. Each pending operation is one file
``<dir>/<seq>.json`` written to a temp file, fsynced, renamed into place and
the directory fsynced, all before ``append`` returns: a crash leaves either
the whole entry or none, never half of one. Entries are replayed in sequence
order (later writes win, as they would have live) and deleted once written.

The replayer *claims* each entry while it works on it; ``append`` may
fold a new entry into the last one (``merge``, e.g. marker updates: latest
value wins, so an outage with a flapping probe does not pile up thousands of
files) but never into a claimed one. A direct write appends its entry
*held* before it talks to the API and deletes it when done, so a crash during
the attempt leaves it to be replayed; the replayer skips held entries. An entry that cannot be parsed is moved
aside to ``<dir>/bad/`` with an error log, and one the API permanently
refuses goes to ``<dir>/failed/<id>-<ns>.json`` with the reason: neither blocks the queue
and neither is silently lost.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kidecar_supervisor.plugin_kit.durable_files import atomic_write_json, fsync_dir

log = logging.getLogger("kidecar.storage.journal")

Entry = dict[str, Any]
#: folds ``new`` into ``last``: the combined entry, or None to keep them apart
Merge = Callable[[Entry, Entry], Entry | None]

_NAME = re.compile(r"^(\d{16})\.json$")


class Journal:
    """Ordered, durable queue of JSON entries in one directory. Thread-safe."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._claimed: int | None = None
        #: entries a direct write is working on (in memory: after a crash they replay)
        self._held: set[int] = set()
        for stale in self.dir.glob(".*.tmp"):  # a crash mid-write: the entry was never promised
            stale.unlink(missing_ok=True)
        self._ids = sorted(int(m.group(1)) for p in self.dir.iterdir()
                           if (m := _NAME.match(p.name)))
        self._next = (self._ids[-1] + 1) if self._ids else 1

    def _path(self, entry_id: int) -> Path:
        return self.dir / f"{entry_id:016d}.json"

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    def pending(self) -> int:
        """Entries waiting for the replayer (not held by a direct write)."""
        with self._lock:
            return sum(1 for i in self._ids if i not in self._held)

    def append(self, entry: Entry, merge: Merge | None = None, hold: bool = False) -> int:
        """Durably add ``entry`` (fsynced before returning); its id.

        With ``merge``, the entry may be folded into the last unclaimed entry.
        With ``hold``, the caller writes it itself (``done``/``fail``/``release``
        when finished) and ``entries``/``claim`` skip it meanwhile; if the process dies
        first, the file is replayed at the next start.
        """
        if hold:
            return self._append_held(entry)
        with self._lock:
            if merge is not None and self._ids and self._ids[-1] != self._claimed \
                    and self._ids[-1] not in self._held:
                last_id = self._ids[-1]
                last = self._read(last_id)
                combined = merge(last, entry) if last is not None else None
                if combined is not None:
                    atomic_write_json(self._path(last_id), combined)
                    return last_id
            entry_id = self._next
            self._next += 1
            atomic_write_json(self._path(entry_id), entry)
            self._ids.append(entry_id)
            return entry_id

    def _append_held(self, entry: Entry) -> int:
        """Reserve the next id, then write outside the lock (concurrent writers fsync in parallel).

        Nothing reads a held entry's file, so it may appear after its id.
        """
        with self._lock:
            entry_id = self._next
            self._next += 1
            self._ids.append(entry_id)
            self._held.add(entry_id)
        try:
            atomic_write_json(self._path(entry_id), entry)
        except BaseException:
            with self._lock:
                self._held.discard(entry_id)
                self._ids.remove(entry_id)
            raise
        return entry_id

    def entries(self) -> list[tuple[int, Entry]]:
        """Every pending entry not held by a direct write, oldest first.

        Unparseable ones are moved aside.
        """
        with self._lock:
            ids = [i for i in self._ids if i not in self._held]
        out = []
        for entry_id in ids:
            with self._lock:
                entry = self._read(entry_id) if entry_id in self._ids else None
            if entry is not None:
                out.append((entry_id, entry))
        return out

    def claim(self, entry_id: int) -> Entry | None:
        """Reserve one entry (not necessarily the oldest); None if it is gone or held."""
        with self._lock:
            if entry_id not in self._ids or entry_id in self._held:
                return None
            entry = self._read(entry_id)
            if entry is not None:
                self._claimed = entry_id
            return entry

    def update(self, entry_id: int, entry: Entry) -> None:
        """Replace a claimed entry's content (e.g. after part of it was written)."""
        with self._lock:
            if entry_id in self._ids:
                atomic_write_json(self._path(entry_id), entry)

    def release(self, entry_id: int) -> None:
        """Give a claimed or held entry back (to be retried later by the replayer)."""
        with self._lock:
            self._held.discard(entry_id)
            if self._claimed == entry_id:
                self._claimed = None

    def done(self, entry_id: int) -> None:
        """The entry was written: delete it."""
        with self._lock:
            self._held.discard(entry_id)
            if self._claimed == entry_id:
                self._claimed = None
            if entry_id in self._ids:
                self._ids.remove(entry_id)
                self._path(entry_id).unlink(missing_ok=True)
                fsync_dir(self.dir)

    def fail(self, entry_id: int, reason: str) -> Path:
        """The API will never accept this entry: keep it under ``failed/`` with the reason."""
        with self._lock:
            self._held.discard(entry_id)
            if self._claimed == entry_id:
                self._claimed = None
            entry = self._read(entry_id) or {}
            target = self._keep_failed(entry_id, entry, reason)
            if entry_id in self._ids:
                self._ids.remove(entry_id)
                self._path(entry_id).unlink(missing_ok=True)
                fsync_dir(self.dir)
        log.error("journal entry %s dropped from the queue: %s (kept in %s)",
                  entry_id, reason, target)
        return target

    def keep_failed(self, entry_id: int, entry: Entry, reason: str) -> Path:
        """Keep (part of) an entry the API refused under ``failed/``, leaving the queue as is."""
        with self._lock:
            target = self._keep_failed(entry_id, entry, reason)
        log.error("part of journal entry %s will never be written: %s (kept in %s)",
                  entry_id, reason, target)
        return target

    def _keep_failed(self, entry_id: int, entry: Entry, reason: str) -> Path:
        """A new file per failure: ids start again at 1 once the queue was empty."""
        target = self.dir / "failed" / f"{entry_id:016d}-{time.time_ns()}.json"
        target.parent.mkdir(exist_ok=True)
        atomic_write_json(target, {"reason": reason, "entry": entry})
        return target

    def _read(self, entry_id: int) -> Entry | None:
        """Parse one entry; a corrupt one is moved to ``bad/`` (caller holds the lock)."""
        path = self._path(entry_id)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            return data
        except FileNotFoundError:
            self._ids.remove(entry_id)
            return None
        except (ValueError, UnicodeDecodeError) as exc:
            bad = self.dir / "bad"
            bad.mkdir(exist_ok=True)
            os.replace(path, bad / path.name)
            self._ids.remove(entry_id)
            log.error("journal entry %s is corrupt (%s); moved to %s", path, exc, bad / path.name)
            return None
