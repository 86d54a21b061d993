"""Crash-safe writes: a reader sees the old file or the new one, never half of one.

One copy of the pattern every writer of kidecar uses (hot_update's manifest,
file_sync's marker, the Kubernetes write journal, the stores' local files):
write a temp file in the target's own directory (same filesystem, so the
rename is atomic), fsync it, rename it over the target, fsync the directory
so the rename itself survives a power cut.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("kidecar.durable_files")


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (the entry lives in the directory)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path: Path) -> None:
    """Delete ``path`` if it exists; a cleanup that fails is logged, never raised.

    Used on failure paths, where raising would hide the error that matters.
    """
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)


def atomic_write_bytes(path: Path, data: bytes, temp_path: Path | None = None) -> None:
    """Replace ``path`` with ``data`` atomically and durably; the temp file never stays.

    ``temp_path`` (default ``.<name>.tmp`` next to ``path``) lets a writer use
    the prefix its crash cleanup recognises. On any error (e.g. a full disk)
    the old file is untouched and the exception propagates.
    """
    temp = temp_path if temp_path is not None else path.with_name(f".{path.name}.tmp")
    try:
        with open(temp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        remove_quietly(temp)
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: Path, data: Any, temp_path: Path | None = None) -> None:
    """``atomic_write_bytes`` of ``data`` as compact, key-sorted JSON."""
    text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    atomic_write_bytes(path, text.encode("utf-8"), temp_path)
