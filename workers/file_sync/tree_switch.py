"""Switch a whole directory tree in one step, so the game never sees half a sync.

A sync that writes file after file leaves a mix of old and new files when it
fails in the middle (a full disk, a file where a directory must go) or while
it runs. Instead the new tree is staged in a hidden sibling of ``dstDir``
(``.<name>.kidecar-stage``, same filesystem): every entry of ``dstDir`` is
hard-linked into it (unchanged files keep their inode and mtime, files other
writers put there are kept), the changed files are written into it, and then
``renameat2(RENAME_EXCHANGE)`` swaps the staged tree and ``dstDir`` atomically.
The path ``dstDir`` keeps working: it names the new tree from that instant,
and the old tree (now under the stage name) is deleted.

The exchange is impossible when ``dstDir`` is itself a mount point (the usual
emptyDir mount: ``EBUSY``), when its parent is read-only, or on a filesystem
without ``RENAME_EXCHANGE``. ``stage_and_switch`` then returns False and the
caller falls back to a two-phase copy in place (docs/deploy.md says how to get
the atomic switch: point ``dstDir`` at a directory *inside* the volume).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from kidecar_supervisor.plugin_kit.durable_files import fsync_dir

log = logging.getLogger("kidecar.file_sync.switch")

STAGE_SUFFIX = ".kidecar-stage"
RENAME_EXCHANGE = 2  # linux/fs.h
AT_FDCWD = -100
# errors that mean "no atomic switch here", not "the sync failed"
UNSUPPORTED = {errno.EBUSY, errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.EROFS,
               errno.EACCES, errno.EPERM, errno.ENOTSUP}


class SwitchUnsupported(Exception):
    """The staged tree cannot be exchanged with dstDir here; copy in place instead."""


def stage_path(dst: Path) -> Path:
    """The hidden sibling the new tree is built in (one per dstDir, reused after a crash)."""
    return dst.parent / f".{dst.name}{STAGE_SUFFIX}"


def remove_stage(dst: Path) -> None:
    """Delete a staged or old tree a crash or a failed sync left next to ``dst``."""
    stage = stage_path(dst)
    if os.path.lexists(stage):
        log.info("removing a staged tree left by an interrupted sync: %s", stage)
        shutil.rmtree(stage, ignore_errors=True)


def exchange(a: Path, b: Path) -> None:
    """Swap the names ``a`` and ``b`` atomically (renameat2 RENAME_EXCHANGE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise SwitchUnsupported("this C library has no renameat2")
    result = renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    if result != 0:
        code = ctypes.get_errno()
        if code in UNSUPPORTED:
            raise SwitchUnsupported(f"cannot exchange {a} and {b}: {os.strerror(code)}")
        raise OSError(code, os.strerror(code), str(b))


def stage_and_switch(dst: Path, write_changes: Callable[[Path], None]) -> bool:
    """Build the new tree beside ``dst`` (a clone of it + ``write_changes(stage)``) and
    swap it in. False when no switch is possible here (nothing was changed); any error
    of ``write_changes`` propagates with ``dst`` untouched and the stage removed."""
    stage = stage_path(dst)
    try:
        _clone_tree(dst, stage)
        write_changes(stage)
        exchange(stage, dst)
    except SwitchUnsupported as exc:
        log.info("no atomic switch for %s (%s): copying in place", dst, exc)
        shutil.rmtree(stage, ignore_errors=True)
        return False
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    fsync_dir(dst.parent)
    shutil.rmtree(stage, ignore_errors=True)  # the old tree, under the stage's name now
    return True


def _clone_tree(dst: Path, stage: Path) -> None:
    """Hard-link every file of ``dst`` into ``stage`` (directories, modes and symlinks
    recreated); anything we cannot link is copied."""
    try:
        os.mkdir(stage)
    except OSError as exc:
        if exc.errno in UNSUPPORTED:
            raise SwitchUnsupported(f"cannot create {stage}: {exc.strerror}") from exc
        raise
    _copy_dir_meta(dst, stage)
    for root, dirs, files in os.walk(dst):
        rel = os.path.relpath(root, dst)
        target_root = stage if rel == "." else stage / rel
        for name in dirs:
            source = Path(root) / name
            if os.path.islink(source):
                os.symlink(os.readlink(source), target_root / name)
                continue
            os.mkdir(target_root / name)
            _copy_dir_meta(source, target_root / name)
        for name in files:
            _clone_entry(Path(root) / name, target_root / name)


def _clone_entry(source: Path, target: Path) -> None:
    info = os.lstat(source)
    if stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(source), target)
    elif stat.S_ISREG(info.st_mode):
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    else:
        log.warning("not keeping %s across the switch: not a file, directory or symlink",
                    source)


def _copy_dir_meta(source: Path, target: Path) -> None:
    info = os.stat(source)
    os.chmod(target, stat.S_IMODE(info.st_mode))
    try:
        os.chown(target, info.st_uid, info.st_gid)
    except PermissionError:
        pass  # not root: the directory is ours, as dstDir is
