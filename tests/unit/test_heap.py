"""Freed heap pages go back to the kernel (issue 16; the supervisor calls it before
it forks, every plugin process on each heartbeat: tests/unit/test_plugin_runtime.py)."""

from __future__ import annotations

import psutil

from kidecar_supervisor import heap

MIB = 1024 * 1024


def freed_below_a_live_block() -> bytes:
    """~40 MiB of malloc'd chunks freed under one that stays: glibc keeps them resident."""
    blocks = [bytes(2000) for _ in range(20_000)]  # > 512 bytes: glibc malloc
    pin = bytes(2000)  # allocated last: the heap top stays in use, no automatic trim
    del blocks
    return pin


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


def test_free_heap_pages_go_back_to_the_kernel() -> None:
    pin = freed_below_a_live_block()
    before = rss()
    heap.release_free_heap()
    after = rss()
    assert before - after > 16 * MIB, f"RSS {before / MIB:.1f} -> {after / MIB:.1f} MiB"
    assert pin
