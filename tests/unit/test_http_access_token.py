"""The bearer token is checked in constant time (issue 14 §3): through
hmac.compare_digest on the whole presented token, never ``==`` or a prefix test
whose time leaks how many leading bytes were right."""

from __future__ import annotations

import hmac

import pytest

from kidecar_supervisor import http_access
from kidecar_supervisor.http_access import AccessPolicy

TOKEN = "s3cret-token-0123456789abcdef"


def test_the_token_goes_through_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(http_access.hmac, "compare_digest", spy)
    policy = AccessPolicy(token=TOKEN)
    assert policy.refusal("POST", "10.0.0.9", f"Bearer {TOKEN}") is None
    refused = policy.refusal("POST", "10.0.0.9", f"Bearer {TOKEN[:-1]}X")
    assert refused is not None and refused[0] == 403
    assert seen == [(TOKEN.encode(), TOKEN.encode()),
                    ((TOKEN[:-1] + "X").encode(), TOKEN.encode())]


@pytest.mark.parametrize("presented", ["", TOKEN[:5], TOKEN + "x", TOKEN.upper(), "é" * 4])
def test_every_other_token_is_403(presented: str) -> None:
    refused = AccessPolicy(token=TOKEN).refusal("POST", "10.0.0.9", f"Bearer {presented}")
    assert refused is not None and refused[0] == 403
