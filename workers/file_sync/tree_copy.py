"""Copy a file tree into the shared directory: only changed files, all at once.

A file is "changed" when the destination is missing, not a regular file, of
another size, or of another sha256. Unchanged files are not touched at all
(their mtime and inode stay), so a game watching mtimes sees only what really
changed. Files that exist only in the destination are kept: the directory is
shared and other writers (the game) may own them.

The game sees the whole old tree or the whole new one (tree_switch.py): the
new tree is staged beside ``dstDir`` and exchanged with it in one rename. Where
that is impossible (``dstDir`` is a mount point, its parent read-only) the copy
is two-phase in place: every changed file is first written completely to a
hidden temp file next to its target (a failure here, the slow and fallible
part, removes the temps and changes nothing), then all temps are renamed onto
their names in one quick pass; each file is then always old or new, never
partial.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from kidecar_supervisor.plugin_kit.durable_files import fsync_dir, remove_quietly
from workers.file_sync.tree_switch import remove_stage, stage_and_switch

log = logging.getLogger("kidecar.file_sync.copy")

TEMP_PREFIX = ".kidecar-sync-"
CHUNK_BYTES = 256 * 1024


class SyncError(Exception):
    """The copy failed; the message names the file and the reason."""


class SyncAborted(SyncError):
    """Stop was requested in the middle of the copy (dstDir was left as it was)."""


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


def sync_tree(src: Path, dst: Path, stop: threading.Event | None = None,
              staged: bool = True) -> SyncReport:
    """Make every regular file under ``src`` present and identical under ``dst``.

    On any error (``SyncError``, ``SyncAborted``) ``dst`` is as it was before.
    ``staged=False`` skips the atomic switch and copies two-phase in place.
    """
    if not src.is_dir():
        raise SyncError(f"srcDir {src} is not a directory (is it baked into the image?)")
    try:
        dst.mkdir(parents=True, exist_ok=True)
        remove_leftovers(dst)
        remove_stage(dst)
    except OSError as exc:
        raise SyncError(f"dstDir {dst} is not usable: {exc.strerror or exc}") from exc
    report = SyncReport()
    digests: dict[str, str] = {}
    changed = _plan(src, dst, report, digests, stop)
    if changed:
        if not (staged and _switch(src, dst, changed, report, digests, stop)):
            _copy_in_place(src, dst, changed, report, digests, stop)
    report.copied = changed
    tree_hash = hashlib.sha256()
    for rel in sorted(digests):
        tree_hash.update(f"{rel}\0{digests[rel]}\n".encode())
    report.digest = tree_hash.hexdigest()
    return report


def _check_stop(stop: threading.Event | None, what: str) -> None:
    if stop is not None and stop.is_set():
        raise SyncAborted(f"stopped {what}; nothing in dstDir was changed")


def _plan(src: Path, dst: Path, report: SyncReport, digests: dict[str, str],
          stop: threading.Event | None) -> list[str]:
    """The relative paths to copy; unchanged files get their digest in ``digests``."""
    changed: list[str] = []
    for rel in source_files(src, report):
        _check_stop(stop, "while comparing")
        target = dst / rel
        if not _inside(dst, target):
            raise SyncError(f"refusing to write {target}: a symlinked directory leads it out "
                            f"of {dst}")
        try:
            same = _identical(src / rel, target)
        except OSError as exc:
            raise SyncError(f"cannot compare {src / rel} with {target}: "
                            f"{exc.strerror or exc}") from exc
        if same is None:
            changed.append(rel)
        else:
            digests[rel] = same
            report.unchanged += 1
    return changed


def _identical(source: Path, target: Path) -> str | None:
    """The source's sha256 when ``target`` already holds the same bytes, else None."""
    if not _same_size_file(target, os.stat(source).st_size):
        return None
    source_digest = file_sha256(source)
    return source_digest if file_sha256(target) == source_digest else None


def _switch(src: Path, dst: Path, changed: list[str], report: SyncReport,
            digests: dict[str, str], stop: threading.Event | None) -> bool:
    """Stage + exchange; False when this dstDir cannot be switched (copy in place)."""
    def write_changes(stage: Path) -> None:
        for rel in changed:
            _check_stop(stop, f"after staging {report.bytes_copied} bytes")
            digests[rel], size = _copy_one(src / rel, stage / rel, stage, dst / rel)
            report.bytes_copied += size
        for directory in sorted({(stage / rel).parent for rel in changed}):
            fsync_dir(directory)

    try:
        return stage_and_switch(dst, write_changes)
    except OSError as exc:
        raise SyncError(f"cannot switch {dst} to the new files: {exc.strerror or exc}") from exc


def _copy_in_place(src: Path, dst: Path, changed: list[str], report: SyncReport,
                   digests: dict[str, str], stop: threading.Event | None) -> None:
    """Two phases: every changed file to a complete temp next to its target, then all
    renames. A failure in phase one removes the temps (and directories it made)."""
    temps: list[tuple[Path, Path]] = []
    made_dirs: list[Path] = []
    try:
        for rel in changed:
            _check_stop(stop, f"after copying {report.bytes_copied} bytes")
            target = dst / rel
            made_dirs.extend(_make_parents(target.parent))
            try:
                temp = _temp_next_to(target)
            except OSError as exc:
                raise SyncError(f"cannot copy {src / rel} to {target}: "
                                f"{exc.strerror or exc}") from exc
            temps.append((temp, target))
            digests[rel], size = _copy_one(src / rel, temp, dst, target)
            report.bytes_copied += size
    except BaseException:
        for temp, _target in temps:
            remove_quietly(temp)
        for directory in reversed(made_dirs):
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    for temp, target in temps:
        try:
            os.replace(temp, target)
        except OSError as exc:
            raise SyncError(f"cannot rename {temp} onto {target}: {exc.strerror or exc}") from exc
    for directory in sorted({target.parent for _temp, target in temps}):
        fsync_dir(directory)


def _make_parents(directory: Path) -> list[Path]:
    """Create ``directory`` and missing parents; the ones created, outermost first."""
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    missing.reverse()
    for path in missing:
        try:
            path.mkdir()
        except OSError as exc:
            raise SyncError(f"cannot create {path}: {exc.strerror or exc}") from exc
    return missing


def _temp_next_to(target: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=target.parent)
    os.close(fd)
    return Path(name)


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


def _copy_one(source: Path, path: Path, root: Path, shown: Path) -> tuple[str, int]:
    """Write ``source``'s bytes to ``path`` (a staged name or a temp next to ``shown``,
    the name the game will see); (sha256, bytes)."""
    if not _inside(root, path):
        raise SyncError(f"refusing to write {shown}: a symlinked directory leads it out of "
                        f"{root}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return copy_into(source, path)
    except OSError as exc:
        raise SyncError(f"cannot copy {source} to {shown}: {exc.strerror or exc}") from exc


def _same_size_file(path: Path, size: int) -> bool:
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False  # missing, or a file stands where its directory must go
    return stat.S_ISREG(info.st_mode) and info.st_size == size


def copy_into(source: Path, path: Path) -> tuple[str, int]:
    """Write ``source``'s bytes and mode to ``path`` (replaced, never written through a
    hard link) and fsync it; (sha256, bytes)."""
    digest = hashlib.sha256()
    written = 0
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # in a staged tree this is a hard link to the live file
    with open(source, "rb") as reader, open(path, "wb") as out:
        while chunk := reader.read(CHUNK_BYTES):
            out.write(chunk)
            digest.update(chunk)
            written += len(chunk)
        out.flush()
        os.fchmod(out.fileno(), os.fstat(reader.fileno()).st_mode & 0o777)
        os.fsync(out.fileno())
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
