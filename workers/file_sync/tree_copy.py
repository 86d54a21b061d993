"""Copy a file tree into the shared directory: only changed files, each atomically.

A file is "changed" when the destination is missing, not a regular file, of
another size, or of another sha256. A changed file is written to a hidden temp
file in the destination's own directory (same filesystem), fsynced, then
``os.replace``d onto its name: a reader (the game) opens either the old file
or the complete new one, never a partial file. Unchanged files are not
touched at all (their mtime and inode stay), so a game watching mtimes sees
only what really changed. Files that exist only in the destination are left
alone: the directory is shared and other writers (hot_update, the game) may
own them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from kidecar_supervisor.plugin_kit.durable_files import fsync_dir, remove_quietly

log = logging.getLogger("kidecar.file_sync.copy")

TEMP_PREFIX = ".kidecar-sync-"
CHUNK_BYTES = 256 * 1024


class SyncError(Exception):
    """The copy failed; the message names the file and the reason."""


class SyncAborted(SyncError):
    """Stop was requested in the middle of the copy (files done so far stay, each complete)."""


@dataclass
class SyncReport:
    """What one sync did. ``digest`` identifies the source tree's content."""

    copied: list[str] = field(default_factory=list)
    unchanged: int = 0
    bytes_copied: int = 0
    skipped: list[str] = field(default_factory=list)
    digest: str = ""

    @property
    def files(self) -> int:
        return len(self.copied) + self.unchanged

    def summary(self) -> str:
        return (f"copied {len(self.copied)} file(s) ({self.bytes_copied} bytes), "
                f"{self.unchanged} unchanged")


def sync_tree(src: Path, dst: Path, stop: threading.Event | None = None) -> SyncReport:
    """Make every regular file under ``src`` present and identical under ``dst``."""
    if not src.is_dir():
        raise SyncError(f"srcDir {src} is not a directory (is it baked into the image?)")
    try:
        dst.mkdir(parents=True, exist_ok=True)
        remove_leftovers(dst)
    except OSError as exc:
        raise SyncError(f"dstDir {dst} is not usable: {exc.strerror or exc}") from exc
    report = SyncReport()
    tree_hash = hashlib.sha256()
    touched_dirs: set[Path] = set()
    for rel in source_files(src, report):
        if stop is not None and stop.is_set():
            raise SyncAborted(f"stopped after {report.summary()}")
        digest, copied_bytes = _sync_file(src / rel, dst / rel, dst)
        tree_hash.update(f"{rel}\0{digest}\n".encode())
        if copied_bytes is None:
            report.unchanged += 1
            continue
        report.copied.append(rel)
        report.bytes_copied += copied_bytes
        touched_dirs.add((dst / rel).parent)
    for directory in sorted(touched_dirs):
        fsync_dir(directory)
    report.digest = tree_hash.hexdigest()
    return report


def source_files(src: Path, report: SyncReport) -> list[str]:
    """Relative paths of the regular files under ``src``, sorted (deterministic digest)."""
    found: list[str] = []
    for root, dirs, files in os.walk(src):
        for name in [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            report.skipped.append(str((Path(root) / name).relative_to(src)))  # not walked
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            rel = str(path.relative_to(src))
            try:
                mode = os.stat(path).st_mode  # follows symlinks: their content is copied
            except OSError:
                report.skipped.append(rel)  # a dangling symlink
                continue
            if stat.S_ISREG(mode):
                found.append(rel)
            else:
                report.skipped.append(rel)
    for rel in report.skipped:
        log.warning("not copying %s: not a regular file", rel)
    return found


def _inside(dst_root: Path, target: Path) -> bool:
    """True if ``target``'s directory really is under ``dst_root`` (no symlinked parent
    leading out of the shared directory)."""
    root = os.path.realpath(dst_root)
    existing = target.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # what mkdir would create below it cannot be a link yet
    parent = os.path.realpath(existing)
    return parent == root or parent.startswith(root + os.sep)


def _sync_file(source: Path, target: Path, dst_root: Path | None = None) -> tuple[str, int | None]:
    """(sha256 of source, bytes copied or None when the target was already identical)."""
    if dst_root is not None and not _inside(dst_root, target):
        raise SyncError(f"refusing to write {target}: a symlinked directory leads it out of "
                        f"{dst_root}")
    try:
        size = os.stat(source).st_size
        if _same_size_file(target, size):
            source_digest = file_sha256(source)
            if file_sha256(target) == source_digest:
                return source_digest, None
        target.parent.mkdir(parents=True, exist_ok=True)
        return atomic_copy(source, target)
    except OSError as exc:
        raise SyncError(f"cannot copy {source} to {target}: {exc.strerror or exc}") from exc


def _same_size_file(path: Path, size: int) -> bool:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size == size


def atomic_copy(source: Path, target: Path) -> tuple[str, int]:
    """Copy through a temp file next to ``target`` + fsync + rename; (sha256, bytes)."""
    digest = hashlib.sha256()
    written = 0
    fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=target.parent)
    try:
        with open(source, "rb") as reader, os.fdopen(fd, "wb") as out:
            while chunk := reader.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
            out.flush()
            os.fchmod(out.fileno(), os.fstat(reader.fileno()).st_mode & 0o777)
            os.fsync(out.fileno())
        os.replace(temp_name, target)
    except BaseException:
        remove_quietly(Path(temp_name))
        raise
    return digest.hexdigest(), written


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as reader:
        while chunk := reader.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def remove_leftovers(dst: Path) -> int:
    """Delete temp files a crash mid-copy left behind (only ours, by prefix)."""
    removed = 0
    for root, _dirs, files in os.walk(dst):
        for name in files:
            if name.startswith(TEMP_PREFIX):
                log.info("removing a temp file left by an interrupted copy: %s", name)
                remove_quietly(Path(root) / name)
                removed += 1
    return removed
