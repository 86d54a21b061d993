"""Who may mutate (issue 15), as a pure decision: loopback, token, opt-out."""

from __future__ import annotations

import pytest

from kidecar_supervisor.http_access import AccessPolicy, is_loopback


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1", True), ("127.3.4.5", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.213.0.1", False), ("0.0.0.0", False), ("::ffff:10.0.0.1", False), ("::", False),
    ("fe80::1%eth0", False), ("", False), (None, False), ("localhost", False),
    ("128.0.0.1", False),
])
def test_loopback_addresses(address: str | None, loopback: bool) -> None:
    assert is_loopback(address) is loopback


OUTSIDE, INSIDE = "10.213.0.1", "127.0.0.1"


def test_read_only_methods_are_open_to_everyone() -> None:
    for policy in (AccessPolicy(), AccessPolicy(token="t", allow_loopback_without_token=False)):
        for method in ("GET", "HEAD", "OPTIONS", "get"):
            assert policy.refusal(method, OUTSIDE, None) is None


def test_default_accepts_only_loopback() -> None:
    policy = AccessPolicy()
    for method in ("POST", "PUT", "PATCH", "DELETE", "BREW"):
        assert policy.refusal(method, INSIDE, None) is None
        status, message = policy.refusal(method, OUTSIDE, None) or (0, "")
        assert status == 403 and "loopback" in message and "KIDECAR_TOKEN" in message
    # a token sent without one being configured opens nothing
    assert policy.refusal("POST", OUTSIDE, "Bearer anything") is not None


def test_token_from_anywhere_and_loopback_as_configured() -> None:
    policy = AccessPolicy(token="s3cret")
    assert policy.refusal("POST", OUTSIDE, "Bearer s3cret") is None
    assert policy.refusal("POST", OUTSIDE, "Bearer  s3cret ") is None
    assert (policy.refusal("POST", OUTSIDE, None) or (0,))[0] == 401
    assert (policy.refusal("POST", OUTSIDE, "Basic czNjcmV0") or (0,))[0] == 401
    assert (policy.refusal("POST", OUTSIDE, "Bearer s3cre") or (0,))[0] == 403
    assert policy.refusal("POST", INSIDE, None) is None
    # loopback sending a wrong token is refused, not waved through
    assert (policy.refusal("POST", INSIDE, "Bearer wrong") or (0,))[0] == 403
    strict = AccessPolicy(token="s3cret", allow_loopback_without_token=False)
    assert (strict.refusal("POST", INSIDE, None) or (0,))[0] == 401
    assert strict.refusal("POST", INSIDE, "Bearer s3cret") is None


def test_opt_out_opens_everything_without_a_token_only() -> None:
    assert AccessPolicy(allow_network_mutations=True).refusal("POST", OUTSIDE, None) is None
    with_token = AccessPolicy(token="t", allow_network_mutations=True)
    assert with_token.refusal("POST", OUTSIDE, None) is not None
