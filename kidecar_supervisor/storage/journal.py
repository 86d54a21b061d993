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

Bounded: past ``JournalLimits`` (pending entries and bytes) the oldest entries
of the lowest-value kind are dropped — Events before markers before results;
a result is dropped only when nothing else is left — each counted by kind
with a warning (at most one a minute per kind). An error the API keeps giving
for the same cause is logged once, not once per entry (``fail(cause=...)``).

Ownership (``exclusive=True``): the two containers of a SidecarSet hot
upgrade share the state dir, so two storage processes may open the same
journal. Only the holder of ``<dir>/.lock`` (an ``flock``) owns the entries
in ``<dir>``; an instance that cannot take it journals into its own
``<dir>/standby-<pid>-<n>/`` (locked too) and keeps trying. Whoever takes
the main lock adopts every standby directory whose lock is free (its owner
died or already adopted), moving its entries after the main ones in order.
So the newer instance takes over the older one's queue when the older one
stops (or is killed: the kernel drops its lock), and no entry is ever
replayed by both.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kidecar_supervisor.plugin_kit.durable_files import atomic_write_json, fsync_dir

log = logging.getLogger("kidecar.storage.journal")

Entry = dict[str, Any]
#: folds ``new`` into ``last``: the combined entry, or None to keep them apart
Merge = Callable[[Entry, Entry], Entry | None]

_NAME = re.compile(r"^(\d{16})\.json$")
_STANDBY = "standby-"
_LOCK = ".lock"
#: what an entry is worth keeping, lowest first: the order entries are dropped in
KIND_RANK = {"event": 0, "markers": 1, "result": 2}
_DROP_WARN_INTERVAL = 60.0
_standby_seq = itertools.count(1)


@dataclass(frozen=True)
class JournalLimits:
    """Caps on what the journal keeps pending (``storageConfig.inKube.journal``)."""

    max_entries: int = 5000
    max_bytes: int = 32 * 1024 * 1024


@dataclass
class _Meta:
    kind: str
    size: int
    since: float


def _kind(entry: Entry) -> str:
    op = str(entry.get("op", ""))
    return op if op in KIND_RANK else "markers"


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class Journal:
    """Ordered, durable queue of JSON entries in one directory. Thread-safe."""

    def __init__(self, directory: Path, limits: JournalLimits | None = None,
                 exclusive: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.main_dir = directory
        self.limits = limits or JournalLimits()
        self.clock = clock
        self._lock = threading.Lock()
        self._claimed: int | None = None
        #: entries a direct write is working on (in memory: after a crash they replay)
        self._held: set[int] = set()
        self._meta: dict[int, _Meta] = {}
        self.dropped: dict[str, int] = dict.fromkeys(KIND_RANK, 0)
        self._drop_warned: dict[str, float] = {}
        self._causes_logged: set[str] = set()
        self._main_fd: int | None = None
        self._standby_fd: int | None = None
        #: called after this instance adopted entries (the store wakes its replayer)
        self.on_adopt: Callable[[], None] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        if exclusive:
            self._main_fd = _try_lock(directory / _LOCK)
            if self._main_fd is None:
                self.dir = directory / f"{_STANDBY}{os.getpid()}-{next(_standby_seq)}"
                self.dir.mkdir()
                self._standby_fd = _try_lock(self.dir / _LOCK)
                log.info("journal %s is owned by another instance (a hot upgrade's older "
                         "sidecar); journaling into %s until it is handed over",
                         directory, self.dir)
        self._load()
        self.failed = self._count_failed()
        if self._main_fd is not None:
            self._adopt_standbys()

    @property
    def owner(self) -> bool:
        """Whether this instance owns the main journal (always, unless ``exclusive``)."""
        return self.dir == self.main_dir

    def _load(self) -> None:
        for stale in self.dir.glob(".*.tmp"):  # a crash mid-write: the entry was never promised
            stale.unlink(missing_ok=True)
        self._ids = sorted(int(m.group(1)) for p in self.dir.iterdir()
                           if (m := _NAME.match(p.name)))
        self._next = (self._ids[-1] + 1) if self._ids else 1
        self._meta = {}
        for entry_id in list(self._ids):
            path = self._path(entry_id)
            try:
                entry = self._read(entry_id)
                if entry is not None:
                    stat = path.stat()
                    self._meta[entry_id] = _Meta(_kind(entry), stat.st_size, stat.st_mtime)
            except OSError as exc:  # a disk error: the replayer retries it; counted as cheap
                log.error("journal entry %s unreadable for now: %s", path, exc)
                self._meta[entry_id] = _Meta("markers", 0, self.clock())

    def _count_failed(self) -> int:
        failed = self.main_dir / "failed"
        return sum(1 for _ in failed.glob("*.json")) if failed.is_dir() else 0

    # -- ownership ---------------------------------------------------------------
    def try_take_over(self) -> bool:
        """A standby instance: take the main journal if its owner is gone (True if owned)."""
        if self.owner:
            return True
        with self._lock:
            if self._held or self._claimed is not None:
                return False  # a write is using one of our entries: next time
        fd = _try_lock(self.main_dir / _LOCK)
        if fd is None:
            return False
        with self._lock:
            self._main_fd = fd
            own = self.dir
            self.dir = self.main_dir
            self._load()
        moved = self._adopt_dir(own, mine=True)
        self._adopt_standbys()
        log.info("journal %s taken over from the previous instance; %d pending (%d of "
                 "ours moved)", self.main_dir, len(self), moved)
        if self.on_adopt is not None:
            self.on_adopt()
        return True

    def _adopt_standbys(self) -> None:
        """Adopt every standby directory whose owner is gone (its lock is free)."""
        for standby in sorted(self.main_dir.glob(f"{_STANDBY}*")):
            if standby.is_dir():
                self._adopt_dir(standby, mine=False)

    def _adopt_dir(self, standby: Path, mine: bool) -> int:
        """Move ``standby``'s entries after ours, in order, and remove it; how many."""
        fd = self._standby_fd if mine else _try_lock(standby / _LOCK)
        if fd is None:
            return 0  # its owner is alive: it adopts into us itself later
        moved = 0
        try:
            names = sorted(p.name for p in standby.iterdir() if _NAME.match(p.name))
            with self._lock:
                for name in names:
                    entry_id = self._next
                    self._next += 1
                    os.replace(standby / name, self._path(entry_id))
                    self._ids.append(entry_id)
                    entry = self._read(entry_id)
                    if entry is not None:
                        self._meta[entry_id] = _Meta(_kind(entry), self._path(entry_id)
                                                     .stat().st_size,
                                                     self.clock())
                    moved += 1
                fsync_dir(self.dir)
            for leftover in standby.iterdir():
                leftover.unlink(missing_ok=True)
            standby.rmdir()
        except OSError as exc:
            log.error("cannot adopt journal entries from %s: %s", standby, exc)
        finally:
            os.close(fd)
            if mine:
                self._standby_fd = None
        return moved

    def close(self) -> None:
        """Give up ownership (the next instance on this state dir takes over)."""
        for fd in (self._main_fd, self._standby_fd):
            if fd is not None:
                os.close(fd)
        self._main_fd = self._standby_fd = None

    # -- numbers -----------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Pending entries, the oldest one's age, failed and dropped entries (for /metrics)."""
        with self._lock:
            since = [m.since for i, m in self._meta.items() if i in self._ids]
            return {"pending": len(self._ids),
                    "pendingBytes": sum(m.size for m in self._meta.values()),
                    "oldestPendingSeconds": max(0.0, self.clock() - min(since)) if since else 0.0,
                    "failed": self.failed, "dropped": dict(self.dropped),
                    "owner": self.owner}

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
                    self._note(last_id, combined)
                    return last_id
            entry_id = self._next
            self._next += 1
            atomic_write_json(self._path(entry_id), entry)
            self._ids.append(entry_id)
            self._note(entry_id, entry)
            self._enforce_limits()
            return entry_id

    def _note(self, entry_id: int, entry: Entry) -> None:
        """Remember kind, size and age of an entry (caller holds the lock)."""
        try:
            size = self._path(entry_id).stat().st_size
        except FileNotFoundError:
            return
        old = self._meta.get(entry_id)
        since = old.since if old else self.clock()
        self._meta[entry_id] = _Meta(_kind(entry), size, since)

    def _forget(self, entry_id: int) -> None:
        self._meta.pop(entry_id, None)

    def _enforce_limits(self) -> None:
        """Drop the oldest entries of the lowest-value kind while past a cap (lock held).

        Entries a writer holds or the replayer claimed are being written: never dropped.
        """
        while (len(self._ids) > self.limits.max_entries
               or sum(m.size for m in self._meta.values()) > self.limits.max_bytes):
            victims = [(KIND_RANK.get(m.kind, 1), i) for i, m in self._meta.items()
                       if i in self._ids and i not in self._held and i != self._claimed]
            if not victims:
                return
            _, victim = min(victims)
            kind = self._meta[victim].kind
            self._ids.remove(victim)
            self._forget(victim)
            self._path(victim).unlink(missing_ok=True)
            self.dropped[kind] = self.dropped.get(kind, 0) + 1
            now = time.monotonic()
            if now - self._drop_warned.get(kind, -_DROP_WARN_INTERVAL) >= _DROP_WARN_INTERVAL:
                self._drop_warned[kind] = now
                log.warning("Kubernetes write journal is full (limits: %d entries, %d bytes): "
                            "dropped the oldest %s entry; %d %s entries dropped so far",
                            self.limits.max_entries, self.limits.max_bytes, kind,
                            self.dropped[kind], kind)

    def _append_held(self, entry: Entry) -> int:
        """Reserve the next id, then write outside the lock (concurrent writers fsync in parallel).

        Nothing reads a held entry's file, so it may appear after its id.
        """
        with self._lock:
            entry_id = self._next
            self._next += 1
            self._ids.append(entry_id)
            self._held.add(entry_id)
            directory = self.dir
        try:
            atomic_write_json(directory / f"{entry_id:016d}.json", entry)
        except BaseException:
            with self._lock:
                self._held.discard(entry_id)
                if entry_id in self._ids:
                    self._ids.remove(entry_id)
            raise
        with self._lock:
            if entry_id in self._ids and directory == self.dir:
                self._note(entry_id, entry)
                self._enforce_limits()
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
                self._note(entry_id, entry)

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
                self._forget(entry_id)
                self._path(entry_id).unlink(missing_ok=True)
                fsync_dir(self.dir)

    def fail(self, entry_id: int, reason: str, cause: str | None = None) -> Path:
        """The API will never accept this entry: keep it under ``failed/`` with the reason.

        Logged as an error once per ``cause`` (default: the reason), then at debug:
        a ConfigMap refused for an hour must not log one line per write.
        """
        with self._lock:
            self._held.discard(entry_id)
            if self._claimed == entry_id:
                self._claimed = None
            entry = self._read(entry_id) or {}
            target = self._keep_failed(entry_id, entry, reason)
            if entry_id in self._ids:
                self._ids.remove(entry_id)
                self._forget(entry_id)
                self._path(entry_id).unlink(missing_ok=True)
                fsync_dir(self.dir)
        self._log_cause(cause or reason, "journal entry %s dropped from the queue: %s "
                        "(kept in %s)", entry_id, reason, target)
        return target

    def keep_failed(self, entry_id: int, entry: Entry, reason: str,
                    cause: str | None = None) -> Path:
        """Keep (part of) an entry the API refused under ``failed/``, leaving the queue as is."""
        with self._lock:
            target = self._keep_failed(entry_id, entry, reason)
        self._log_cause(cause or reason, "part of journal entry %s will never be written: %s "
                        "(kept in %s)", entry_id, reason, target)
        return target

    def _log_cause(self, cause: str, msg: str, *args: Any) -> None:
        with self._lock:
            first = cause not in self._causes_logged
            self._causes_logged.add(cause)
        if first:
            log.error(msg + "; further entries failing for the same cause are logged at "
                      "debug level only (see kidecar_storage_journal_failed_entries)", *args)
        else:
            log.debug(msg, *args)

    def _keep_failed(self, entry_id: int, entry: Entry, reason: str) -> Path:
        """A new file per failure: ids start again at 1 once the queue was empty."""
        target = self.main_dir / "failed" / f"{entry_id:016d}-{time.time_ns()}.json"
        target.parent.mkdir(exist_ok=True)
        atomic_write_json(target, {"reason": reason, "entry": entry})
        self.failed += 1
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
            if entry_id in self._ids:
                self._ids.remove(entry_id)
            self._forget(entry_id)
            return None
        except (ValueError, UnicodeDecodeError) as exc:
            bad = self.dir / "bad"
            bad.mkdir(exist_ok=True)
            os.replace(path, bad / path.name)
            self._ids.remove(entry_id)
            self._forget(entry_id)
            log.error("journal entry %s is corrupt (%s); moved to %s", path, exc, bad / path.name)
            return None
