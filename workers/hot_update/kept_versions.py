"""Kept versions: byte-exact copies of recent files, in the state dir, for rollback.

A rollback must put back exactly the bytes the game ran before, whether the
source URL still works, was pre-signed and expired, or was redacted before it
was stored. So every file kidecar replaces, and every version it confirms, is
copied into ``<state dir>/hot-update-kept/<n>/`` (``data`` plus ``meta.json``:
version, redacted URL, file name, sha256, mtime, when). The state dir is an
emptyDir that survives container restarts, so a restarted sidecar restores
its version from here without downloading (and without a secret it no longer
has). ``keepVersions`` bounds the count; the newest copies win, and the one
an update may still need to roll back to is never pruned while it runs.

Never in ``fileDir``: that directory is the game's (DESIGN §5). Copies are
written to a temp dir and renamed into place, so a crash leaves a complete
entry or none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kidecar_supervisor.plugin_kit.durable_files import fsync_dir
from workers.hot_update.download import Writeback

log = logging.getLogger("kidecar.hot_update.kept")

KEPT_DIR = "hot-update-kept"
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class KeptVersion:
    """One kept copy; ``key`` is its directory name."""

    key: str
    version: str
    url: str
    file_name: str
    sha256: str
    size: int
    mtime_ns: int
    at: float

    def public(self) -> dict[str, Any]:
        """For ``GET /hot-update``'s ``kept`` list."""
        return {"version": self.version, "url": self.url, "file": self.file_name,
                "sha256": self.sha256, "bytes": self.size, "at": self.at}


class KeptVersions:
    """The kept copies of one plugin; used under the plugin's update lock."""

    def __init__(self, state_dir: Path, keep: int) -> None:
        self.dir = state_dir / KEPT_DIR
        self.keep = keep

    def entries(self) -> list[KeptVersion]:
        """Every complete kept copy, newest first."""
        found = []
        try:
            children = list(self.dir.iterdir())
        except FileNotFoundError:
            return []
        for child in children:
            if child.name.startswith("."):
                continue
            try:
                meta = json.loads((child / "meta.json").read_text())
                found.append(KeptVersion(key=child.name, **meta))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("ignoring an unreadable kept version %s: %s", child, exc)
        return sorted(found, key=lambda e: (e.at, e.key), reverse=True)

    def find(self, version: str, sha256: str = "") -> KeptVersion | None:
        """The newest copy of ``version`` (with that sha256, when one is given)."""
        for entry in self.entries():
            if entry.version == version and (not sha256 or entry.sha256 == sha256):
                return entry
        return None

    def data(self, entry: KeptVersion) -> Path:
        return self.dir / entry.key / "data"

    def keep_file(self, source: Path, version: str, url: str, at: float) -> KeptVersion:
        """Copy ``source`` in as ``version``; an identical copy already kept is reused."""
        info = source.stat()
        self.dir.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=".new-", dir=self.dir))
        try:
            digest = _copy(source, temp / "data")
            for entry in self.entries():
                if (entry.version, entry.sha256, entry.file_name) == (version, digest,
                                                                       source.name):
                    shutil.rmtree(temp, ignore_errors=True)
                    return self.mark_used(entry, at)
            meta = {"version": version, "url": url, "file_name": source.name,
                    "sha256": digest, "size": info.st_size, "mtime_ns": info.st_mtime_ns,
                    "at": at}
            (temp / "meta.json").write_text(json.dumps(meta))
            _fsync(temp / "meta.json")
            key = f"{self._next_number():06d}"
            os.rename(temp, self.dir / key)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        fsync_dir(self.dir)
        return KeptVersion(key=key, **meta)  # type: ignore[arg-type]

    def by_key(self, key: str) -> KeptVersion | None:
        return next((e for e in self.entries() if e.key == key), None)

    def mark_used(self, entry: KeptVersion, at: float) -> KeptVersion:
        """A version in use again (rolled back to) counts as the newest for pruning."""
        meta = asdict(entry)
        meta.pop("key")
        meta["at"] = at
        path = self.dir / entry.key / "meta.json"
        temp = path.with_name(".meta.json.tmp")
        temp.write_text(json.dumps(meta))
        _fsync(temp)
        os.replace(temp, path)
        return KeptVersion(key=entry.key, **meta)

    def copy_out(self, entry: KeptVersion, dest: Path) -> None:
        """Write the kept bytes to ``dest`` with the original mtime (a marker matches it)."""
        _copy(self.data(entry), dest)
        os.utime(dest, ns=(entry.mtime_ns, entry.mtime_ns))

    def prune(self, protect: tuple[str, ...] = ()) -> None:
        """Keep the newest ``keep`` copies, plus the ``protect``ed keys; drop leftovers."""
        entries = self.entries()
        for entry in entries[self.keep:]:
            if entry.key not in protect:
                shutil.rmtree(self.dir / entry.key, ignore_errors=True)
        try:
            for child in self.dir.iterdir():
                if child.name.startswith(".new-"):
                    shutil.rmtree(child, ignore_errors=True)
        except FileNotFoundError:
            pass

    def _next_number(self) -> int:
        numbers = [int(c.name) for c in self.dir.iterdir() if c.name.isdigit()]
        return max(numbers, default=0) + 1


def _copy(source: Path, dest: Path) -> str:
    """Copy and fsync; the SHA-256 of the bytes copied (one read does both).

    Neither file stays in the page cache, which counts against the sidecar's
    memory limit (see download.Writeback): a 1 GiB version costs no memory.
    """
    digest = hashlib.sha256()
    copied = 0
    with open(source, "rb", buffering=0) as src, open(dest, "wb", buffering=0) as out:
        writeback = Writeback(out.fileno())
        while chunk := src.read(_COPY_CHUNK):
            digest.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[out.write(view) or 0:]
            copied += len(chunk)
            writeback.advance(copied)
            _drop_cache(src.fileno())
        os.fsync(out.fileno())
        _drop_cache(out.fileno())
    return digest.hexdigest()


def _drop_cache(fd: int) -> None:
    """Drop the clean pages of ``fd`` from the page cache (best effort)."""
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
