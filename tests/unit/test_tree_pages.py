"""The tree's own memory (tests/support/tree_pages.py): distinct resident pages, each
counted once, as the footprint limit test and bench measure it (issue 16)."""

from __future__ import annotations

import mmap
import os

import psutil
import pytest

from tests.support.tree_pages import MIB, own_mib

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="page frame numbers in /proc/PID/pagemap need root")


def test_one_process_owns_what_is_resident_in_it() -> None:
    me = psutil.Process()
    rss = me.memory_info().rss / MIB
    own = own_mib([me.pid])
    assert abs(own - rss) < 0.5, (own, rss)


def test_a_page_two_mappings_share_counts_once() -> None:
    """The same file pages mapped twice (as a forked child and its parent share them):
    RSS counts them in each mapping, the tree's own memory once."""
    size = 32 * MIB
    me = psutil.Process()
    own_before, rss_before = own_mib([me.pid]), me.memory_info().rss / MIB
    with open("/dev/shm/kidecar-tree-pages-test", "w+b") as f:
        try:
            f.truncate(size)
            first = mmap.mmap(f.fileno(), size)
            second = mmap.mmap(f.fileno(), size)
            first.write(b"x" * size)
            assert second.read() == b"x" * size  # every page now in both mappings
            own = own_mib([me.pid]) - own_before
            rss = me.memory_info().rss / MIB - rss_before
            first.close()
            second.close()
        finally:
            os.unlink(f.name)
    assert rss > 2 * size / MIB - 1  # once per mapping
    assert size / MIB - 1 < own < size / MIB + 6  # once (plus what measuring allocates)
