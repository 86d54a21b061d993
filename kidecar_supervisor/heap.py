"""Give glibc's free heap pages back to the kernel.

Python allocates every object over 512 bytes (a response body, a decoded
ConfigMap's strings, a download chunk) with malloc. glibc keeps freed chunks
below a live one in the heap, and raises its mmap threshold after a large
block is freed, so a burst of work leaves pages resident that nothing uses:
1.26 MiB in the storage process after one hot update's result was written
(issue 16, docs/footprint.md). ``malloc_trim(0)`` returns every whole free
page; it takes about 0.25 ms on these heaps, so plugin processes call it on
each heartbeat, and the supervisor once before it forks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # musl has no malloc_trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_heap() -> None:
    """Return glibc's free heap pages to the kernel (a no-op without glibc)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
