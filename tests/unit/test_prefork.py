"""prefork: what the supervisor builds before forking (issue 16, docs/footprint.md)."""

from __future__ import annotations

import ssl

from kidecar_supervisor import prefork


def test_build_shared_keeps_a_verifying_tls_context_for_the_life_of_the_process() -> None:
    kept = len(prefork._KEPT)
    prefork.build_shared()
    contexts = [c for c in prefork._KEPT[kept:] if isinstance(c, ssl.SSLContext)]
    assert contexts, "no TLS context kept: OpenSSL would be loaded again in every child"
    assert contexts[0].verify_mode == ssl.CERT_REQUIRED
    prefork._KEPT[kept:] = []
