"""Coalescing merge patches to one object: latest value wins, one request per burst.

A probe flapping, a hot update and its markers all patch the same pod. While
one PATCH of an object is in flight, later patches of that object are
composed into a single pending patch (RFC 7386 composition: latest value
wins) and sent as one request when the first returns. A burst of N writes
thus costs at most two requests, and no write is dropped: every caller
waits for the request that carried its patch and gets that request's result
(or its error, so the caller can journal its own patch).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kidecar_supervisor.storage.patches import JsonObj, compose

Send = Callable[[JsonObj], Any]


@dataclass
class _Batch:
    patch: JsonObj
    send: Send
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
    callers: int = 1


@dataclass
class _Slot:
    pending: _Batch | None = None
    busy: bool = False


class Coalescer:
    """Thread-safe; ``submit`` blocks until the request carrying the patch is done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self.sent = 0  # requests actually sent
        self.submitted = 0  # patches submitted

    def submit(self, key: str, patch: JsonObj, send: Send) -> Any:
        """Send ``patch`` for object ``key`` (alone or composed with concurrent ones)."""
        with self._lock:
            self.submitted += 1
            slot = self._slots.setdefault(key, _Slot())
            if slot.pending is None:
                slot.pending = _Batch(dict(patch), send)
            else:
                slot.pending.patch = compose(slot.pending.patch, patch)
                slot.pending.callers += 1
            batch = slot.pending
            lead = not slot.busy
            if lead:
                slot.busy = True
                slot.pending = None
        if lead:
            self._drain(key, slot, batch)
        batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.result

    def _drain(self, key: str, slot: _Slot, batch: _Batch) -> None:
        """Send ``batch``, then whatever piled up meanwhile, until the slot is idle."""
        current: _Batch | None = batch
        while current is not None:
            try:
                current.result = current.send(current.patch)
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
                current.error = exc
            with self._lock:
                self.sent += 1
            current.done.set()
            with self._lock:
                current = slot.pending
                slot.pending = None
                if current is None:
                    slot.busy = False
                    if self._slots.get(key) is slot:
                        del self._slots[key]
