"""prefork: what the supervisor builds before forking (issue 16, docs/footprint.md)."""

from __future__ import annotations

import ssl

import psutil

from kidecar_supervisor import prefork

MIB = 1024 * 1024


def test_build_shared_keeps_a_verifying_tls_context_for_the_life_of_the_process() -> None:
    kept = len(prefork._KEPT)
    prefork.build_shared()
    contexts = [c for c in prefork._KEPT[kept:] if isinstance(c, ssl.SSLContext)]
    assert contexts, "no TLS context kept: OpenSSL would be loaded again in every child"
    assert contexts[0].verify_mode == ssl.CERT_REQUIRED
    prefork._KEPT[kept:] = []


def test_free_heap_pages_go_back_to_the_kernel() -> None:
    """Freed malloc chunks below a live one stay resident until trimmed."""
    blocks = [bytes(2000) for _ in range(20_000)]  # > 512 bytes: glibc malloc, ~40 MiB
    pin = bytes(2000)  # allocated last: the heap top stays in use, no automatic trim
    del blocks
    before = psutil.Process().memory_info().rss
    prefork.release_free_heap()
    after = psutil.Process().memory_info().rss
    assert before - after > 16 * MIB, f"RSS {before / MIB:.1f} -> {after / MIB:.1f} MiB"
    assert pin
