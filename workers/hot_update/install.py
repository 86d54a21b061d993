"""Putting a downloaded file into place atomically, and taking it back.

``fileDir`` is the shared emptyDir the game reads. A new file replaces the old
one with one ``rename`` (atomic on the same filesystem), after which the
directory is fsynced so the rename survives a crash.

Which version the file in place is (``version_marker``), the copy of the
previous file a rollback puts back (``kept_versions``) and the journal of an
unconfirmed update (``pending``) all live in the state dir: fileDir is the
game's directory. Only the download's temp file must be in fileDir, because
a rename works only within one filesystem; it is hidden and short-lived, and
a restart removes a leftover one. kidecar 0.1/0.2 kept a hidden hard link of
the previous file here (``.kidecar-prev-*``): one left by a crash is put back
at start and removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kidecar_supervisor.plugin_kit.durable_files import (
    fsync_dir,
    remove_quietly,
)
from workers.hot_update.download import TEMP_PREFIX

log = logging.getLogger("kidecar.hot_update.install")

BACKUP_PREFIX = ".kidecar-prev-"
#: where kidecar 0.1 kept its manifest (in fileDir, against DESIGN §5); read once, removed
LEGACY_MANIFEST_NAME = ".kidecar-hot-update.json"


class DirectoryBusy(Exception):
    """Another process (a second kidecar during a hot upgrade) is updating fileDir."""


def _flock(fd: int, wait: float | None) -> None:
    """Exclusive flock; ``wait`` None blocks, else DirectoryBusy after ``wait`` seconds."""
    if wait is None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # say so: a wait here (at start-up, or restoring) is otherwise a silent hang
            log.warning("fileDir is locked by another kidecar process (a hot-upgrade peer "
                        "updating it, or a previous run finishing its update); waiting for it")
            fcntl.flock(fd, fcntl.LOCK_EX)
            log.info("fileDir's lock is free again; going on")
        return
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise DirectoryBusy from None
            time.sleep(0.05)


class FileSlot:
    """The files of one ``fileDir``: install, roll back, manifest, crash leftovers."""

    def __init__(self, file_dir: Path) -> None:
        self.dir = file_dir

    @contextlib.contextmanager
    def locked(self, wait: float | None = None) -> Iterator[None]:
        """Exclusive use of ``fileDir`` across processes (flock; freed if the holder dies).

        During a hot upgrade two kidecar instances share the directory: the newer
        one must neither clean up the older one's in-flight temp file nor update
        at the same time.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        # flock on the directory itself: no lock file for the game to see
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            _flock(fd, wait)
            yield
        finally:
            os.close(fd)

    def prepare(self) -> None:
        """Create ``fileDir`` and undo what a crash mid-update left behind."""
        with self.locked():
            self._clean_leftovers()

    def _clean_leftovers(self) -> None:
        """Under the lock, any temp or backup file is a dead writer's leftover."""
        for entry in self.dir.iterdir():
            if entry.name.startswith(TEMP_PREFIX):
                log.info("removing a temp file left by an interrupted download: %s", entry)
                remove_quietly(entry)
            elif entry.name.startswith(BACKUP_PREFIX):
                self._restore_backup(entry, self.dir / entry.name[len(BACKUP_PREFIX):])
        fsync_dir(self.dir)

    def _restore_backup(self, backup: Path, target: Path) -> None:
        if target.exists() and os.path.samefile(backup, target):
            remove_quietly(backup)  # the crash came before the rename: nothing changed
            return
        log.warning("an update was interrupted before its reload finished: "
                    "putting the previous %s back", target)
        os.replace(backup, target)

    def target(self, file_name: str) -> Path:
        return self.dir / file_name

    def install(self, temp_path: Path, file_name: str) -> Path:
        """Rename ``temp_path`` onto ``file_name`` (keeping the old file's mode); fsync the dir.

        The previous bytes are not kept here: the plugin copied them into the state
        dir first (kept_versions), so fileDir holds nothing but the game's files.
        """
        target = self.target(file_name)
        try:
            mode = os.stat(target).st_mode & 0o7777
        except FileNotFoundError:
            mode = None
        if mode is not None:
            os.chmod(temp_path, mode)
        os.replace(temp_path, target)
        fsync_dir(self.dir)
        return target

    def take_legacy_manifest(self) -> dict[str, Any] | None:
        """Read and remove the manifest older kidecars kept in fileDir (None if none).

        kidecar's own files belong in the state dir (DESIGN §5); the caller moves
        the content into the version marker.
        """
        path = self.dir / LEGACY_MANIFEST_NAME
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring an unreadable %s: %s", path, exc)
            data = None
        remove_quietly(path)
        fields = ("version", "url", "file_name", "size", "mtime_ns", "sha256")
        if not isinstance(data, dict) or not all(k in data for k in fields[:5]):
            return None
        return {k: data.get(k, "") for k in fields}
