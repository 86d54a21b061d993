"""A process tree's own memory: each resident physical page it maps, counted once.

PSS divides a shared page among *every* process on the machine that maps it.
libpython's and libcrypto's pages are shared with the test runner's own Python
and any other Python process running meanwhile, so the sidecar tree's PSS in a
test environment is lower than in a pod, where nothing outside kidecar's
container maps those files, and it moves with whatever else runs (issue 16:
a CI run measured the tree under 64 MiB while other tests ran beside it, and
65.8 MiB alone). Counting the distinct physical pages the tree's processes map
gives the PSS the tree has when nothing else shares its pages, independent of
the machine's other processes. It is never below the tree's PSS.

Reads ``/proc/PID/pagemap``, whose page frame numbers only root can see.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20
_PRESENT = 1 << 63
_PFN = (1 << 55) - 1


def resident_frames(pid: int) -> set[int]:
    """The page frame numbers of ``pid``'s resident pages (root only: others read 0)."""
    frames: set[int] = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            if line.rstrip().endswith("[vsyscall]"):  # not in the page tables
                continue
            start, end = (int(bound, 16) for bound in line.split()[0].split("-"))
            pagemap.seek(start // PAGE * 8)
            entries = pagemap.read((end - start) // PAGE * 8)
            frames.update(entry & _PFN for (entry,) in struct.iter_unpack("<Q", entries)
                          if entry & _PRESENT)
    return frames


def own_mib(pids: Iterable[int]) -> float:
    """The tree's own memory in MiB: distinct resident pages of ``pids``, each once."""
    frames: set[int] = set()
    for pid in pids:
        try:
            frames |= resident_frames(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue  # it exited meanwhile
    return len(frames) * PAGE / MIB
