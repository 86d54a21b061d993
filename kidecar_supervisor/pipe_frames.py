"""Whole messages in and out of a ``multiprocessing`` pipe's byte stream, without blocking.

Plugins send with ``Connection.send`` (a length header, then a pickle). The
supervisor reads whatever bytes are there and takes out only complete
messages, so a plugin stopped half-way through a message can never block the
supervisor's main loop (``Connection.recv`` would wait for the rest). The other
way, ``encode`` gives the bytes ``Connection.send`` would write, so the
supervisor can queue them and write what the pipe takes (``Connection.recv``
in the plugin reads them as usual).
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Iterator
from multiprocessing.reduction import ForkingPickler
from typing import Any

#: a plugin message larger than this is a bug (or an attack), not a status report
MAX_MESSAGE_BYTES = 64 << 20


class PipeFrameError(Exception):
    pass


def encode(message: Any) -> bytes:
    """``message`` framed as ``Connection.send`` frames it (4-byte length, pickle)."""
    payload = bytes(ForkingPickler.dumps(message))
    if len(payload) > MAX_MESSAGE_BYTES:
        raise PipeFrameError(f"message of {len(payload)} bytes")
    return struct.pack("!i", len(payload)) + payload


class PipeFrames:
    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def messages(self) -> Iterator[Any]:
        while True:
            frame = self._take()
            if frame is None:
                return
            try:
                yield pickle.loads(frame)
            except Exception as exc:  # noqa: BLE001 - any unpickling failure is a garbled pipe
                raise PipeFrameError(f"cannot decode a message: {exc}") from exc

    def _take(self) -> bytes | None:
        """One frame in ``Connection._send_bytes``'s format, or None if incomplete."""
        buffer = self._buffer
        if len(buffer) < 4:
            return None
        (size,) = struct.unpack_from("!i", buffer)
        header = 4
        if size == -1:  # large message: an 8-byte length follows
            if len(buffer) < 12:
                return None
            (size,) = struct.unpack_from("!Q", buffer, 4)
            header = 12
        if size < 0 or size > MAX_MESSAGE_BYTES:
            raise PipeFrameError(f"message of {size} bytes")
        if len(buffer) < header + size:
            return None
        frame = bytes(buffer[header:header + size])
        del buffer[:header + size]
        return frame
