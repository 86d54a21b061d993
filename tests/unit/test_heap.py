"""Freed heap pages go back to the kernel, in the supervisor and on every plugin
heartbeat (issue 16: the storage process kept 1.26 MiB of them after one update)."""

from __future__ import annotations

import threading
import time
from multiprocessing import Pipe
from pathlib import Path
from typing import Any

import psutil

from kidecar_supervisor import heap
from kidecar_supervisor.plugin_api import Plugin, PodIdentity
from kidecar_supervisor.plugin_runtime import PluginRuntime

MIB = 1024 * 1024


def _freed_below_a_live_block() -> bytes:
    """~40 MiB of malloc'd chunks freed under one that stays: glibc keeps them resident."""
    blocks = [bytes(2000) for _ in range(20_000)]  # > 512 bytes: glibc malloc
    pin = bytes(2000)  # allocated last: the heap top stays in use, no automatic trim
    del blocks
    return pin


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def test_free_heap_pages_go_back_to_the_kernel() -> None:
    pin = _freed_below_a_live_block()
    before = _rss()
    heap.release_free_heap()
    after = _rss()
    assert before - after > 16 * MIB, f"RSS {before / MIB:.1f} -> {after / MIB:.1f} MiB"
    assert pin


class _Idle(Plugin):
    name = "idle"

    def run(self) -> None:
        self.ctx.stop_requested.wait()


def test_a_plugin_process_gives_freed_pages_back_on_its_next_heartbeat(tmp_path: Path) -> None:
    supervisor_end, plugin_end = Pipe(duplex=True)
    runtime = PluginRuntime(_Idle, "idle", None, plugin_end, tmp_path, PodIdentity(),
                            heartbeat_interval=0.05, stop_grace=1.0)
    thread = threading.Thread(target=runtime.main, daemon=True)
    thread.start()
    try:
        _next_heartbeat(supervisor_end)
        pin = _freed_below_a_live_block()  # what a call (a store write) leaves behind
        before = _rss()
        _next_heartbeat(supervisor_end)
        _next_heartbeat(supervisor_end)  # the trim follows the beat it comes after
        after = _rss()
        assert before - after > 16 * MIB, f"RSS {before / MIB:.1f} -> {after / MIB:.1f} MiB"
        assert pin
    finally:
        runtime.request_stop()
        thread.join(5)
        supervisor_end.close()
    assert not thread.is_alive()


def _next_heartbeat(conn: Any) -> None:
    deadline = time.monotonic() + 5
    while conn.poll(max(0.0, deadline - time.monotonic())):
        if conn.recv()["t"] == "hb":
            return
    raise AssertionError("no heartbeat within 5 s")
