"""The pod watch's pure parts (storage/pod_watch.py) and the desired-version annotation's
parsing (workers/hot_update/desired.py)."""

from __future__ import annotations

import json

import pytest

from kidecar_supervisor.storage.pod_watch import backoff, watch_events
from workers.hot_update.desired import parse_desired


def test_watch_events_are_read_across_any_chunk_boundary() -> None:
    events = [{"type": "ADDED", "object": {"metadata": {"resourceVersion": "5"}}},
              {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}]
    body = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    for size in (1, 3, 7, len(body)):
        chunks = [body[i:i + size] for i in range(0, len(body), size)]
        assert list(watch_events(iter(chunks))) == events


def test_backoff_grows_is_capped_and_jittered() -> None:
    first = [backoff(0) for _ in range(50)]
    assert all(0.25 <= d <= 0.5 for d in first) and len(set(first)) > 1
    assert all(15.0 <= backoff(30) <= 30.0 for _ in range(50))


def test_a_desired_version_parses_and_turns_into_the_post_body() -> None:
    d = parse_desired('{"version":"v2","url":"http://h/f","sha256":"ab","rollout":"r1"}')
    assert d.params() == {"version": "v2", "url": "http://h/f", "sha256": "ab"}
    assert d.rollout == "r1"
    assert parse_desired('{"version":"v2","url":"http://h/f"}').params() == {
        "version": "v2", "url": "http://h/f"}


@pytest.mark.parametrize("text, why", [
    ("v2", "not JSON"), ("[]", "JSON object"), ('{"url":"http://h/f"}', "version"),
    ('{"version":"v2"}', "url"), ('{"version":"v2","url":"u","x":1}', "unknown field"),
    ('{"version":"v2","url":"u","sha256":5}', "sha256")])
def test_a_bad_desired_version_says_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_desired(text)
