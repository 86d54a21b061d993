"""Which version is in fileDir: a marker in the state dir that a full disk cannot stop.

The marker is what keeps a restart from rolling the game back. If the result
store could not record v3 (the state dir was full, the database broken), the
store still says v2 while the game already has v3; at the next start the
marker says "v3 is in place, applied after the v2 record" and kidecar keeps
v3 instead of putting v2 over it.

So the marker must be written exactly when the store may fail: on a full
disk. It is a file of fixed size, created (zero-filled) once while there is
room, and afterwards only overwritten in place: an overwrite of blocks the
file already owns needs no free space. Two slots take turns, each with a
sequence number and a SHA-256 of its content; a crash tearing one write
leaves the other slot, the previous marker, intact.

Like every file of kidecar it lives in the state dir, never in fileDir, the
game's directory (DESIGN §5). Describing the file in place by size and mtime
(not a hash) lets a restart tell "unchanged since we put it there" in a
``stat``: anything else touching the file makes the marker not match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from kidecar_supervisor.plugin_kit.durable_files import atomic_write_bytes
from workers.hot_update.url_redaction import redact

log = logging.getLogger("kidecar.hot_update.marker")

MARKER_NAME = "hot-update-applied.marker"
#: one slot holds the longest accepted URL (8192 characters) with room to spare
SLOT_BYTES = 24 * 1024
_MAGIC = b"KDVM1"
_HEADER = struct.Struct(">5sQI32s")  # magic, sequence, payload length, sha256 of the payload


@dataclass(frozen=True)
class AppliedFile:
    """What an update put into fileDir, and when (the time its result is recorded with)."""

    version: str
    url: str
    file_name: str
    size: int
    mtime_ns: int
    sha256: str = ""
    at: float = 0.0

    def describes(self, file_dir: Path) -> bool:
        """True if the file in ``file_dir`` is still the one this marker describes."""
        try:
            info = os.stat(file_dir / self.file_name)
        except OSError:
            return False
        return info.st_size == self.size and info.st_mtime_ns == self.mtime_ns


class MarkerUnavailable(OSError):
    """The marker file could not be created (e.g. the state dir was already full)."""


class VersionMarker:
    """The two-slot, preallocated marker file in the state dir.

    Written only under the plugin's update lock (and fileDir's flock); the next
    sequence number is read from the file each time, so two kidecar instances
    sharing the state dir during a hot upgrade never reuse one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def ensure(self) -> None:
        """Create the zero-filled file unless it exists; MarkerUnavailable if there is no room."""
        if self.available:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, bytes(2 * SLOT_BYTES))
        except OSError as exc:
            raise MarkerUnavailable(exc.errno, f"cannot create the version marker {self.path}: "
                                    f"{exc.strerror or exc}") from exc

    @property
    def available(self) -> bool:
        try:
            return self.path.stat().st_size == 2 * SLOT_BYTES
        except OSError:
            return False

    def in_place(self, file_dir: Path) -> AppliedFile | None:
        """The newest marker that still describes the file in ``file_dir``, or None.

        Both slots are asked: after a reload failed and the previous file was put
        back (same inode, same mtime), the previous marker describes it again.
        """
        for applied in self._markers():
            if applied.describes(file_dir):
                return applied
        return None

    def newest(self) -> AppliedFile | None:
        """The newest intact marker, whether or not its file is still in place."""
        markers = self._markers()
        return markers[0] if markers else None

    def write(self, applied: AppliedFile) -> None:
        """Overwrite the older slot in place and fsync: no new blocks, so a full disk is fine."""
        payload = json.dumps(asdict(applied), separators=(",", ":"), sort_keys=True).encode()
        if _HEADER.size + len(payload) > SLOT_BYTES:
            raise ValueError(f"version marker of {len(payload)} bytes does not fit a slot")
        sequence = max((seq for seq, _ in self._slots()), default=0) + 1
        header = _HEADER.pack(_MAGIC, sequence, len(payload), hashlib.sha256(payload).digest())
        block = (header + payload).ljust(SLOT_BYTES, b"\0")
        fd = os.open(self.path, os.O_WRONLY)
        try:
            written = os.pwrite(fd, block, (sequence % 2) * SLOT_BYTES)
            if written != SLOT_BYTES:
                raise OSError(f"short write of the version marker ({written} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)

    def _markers(self) -> list[AppliedFile]:
        """Every intact, parseable marker, newest first."""
        out = []
        for _, data in sorted(self._slots(), key=lambda s: s[0], reverse=True):
            try:
                applied = AppliedFile(**json.loads(data))
                # a marker of kidecar <= 0.2 may hold a URL with its credentials
                out.append(replace(applied, url=redact(applied.url)))
            except (ValueError, TypeError) as exc:
                log.warning("ignoring a version marker slot that does not parse: %s", exc)
        return out

    def _slots(self) -> list[tuple[int, bytes]]:
        """(sequence, payload) of every intact slot."""
        try:
            raw = self.path.read_bytes()
        except OSError:
            return []
        found = []
        for index in range(2):
            block = raw[index * SLOT_BYTES:(index + 1) * SLOT_BYTES]
            if len(block) < _HEADER.size:
                continue
            magic, sequence, length, digest = _HEADER.unpack_from(block)
            payload = block[_HEADER.size:_HEADER.size + length]
            if magic == _MAGIC and len(payload) == length and \
                    hashlib.sha256(payload).digest() == digest:
                found.append((sequence, payload))
        return found
