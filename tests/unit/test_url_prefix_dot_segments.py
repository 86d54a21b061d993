"""allowedUrlPrefixes cannot be left through dot segments (found while proving that
the schemathesis run stays in its prefix, issue 14 §2): requests resolves
/files/../other to /other before connecting, so a URL that only *looks* under the
prefix must be refused."""

from __future__ import annotations

import pytest

from workers.hot_update.url_redaction import allowed

PREFIX = ("http://127.0.0.1:8000/files/",)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/files/../other/x.cfg",
    "http://127.0.0.1:8000/files/%2e%2e/other/x.cfg",
    "http://127.0.0.1:8000/files/%2E%2E/other/x.cfg",
    "http://127.0.0.1:8000/files/..%5cother/x.cfg",
    "http://127.0.0.1:8000/files/./../x.cfg",
    "http://127.0.0.1:8000/files/a/../../x.cfg",
])
def test_dot_segments_are_outside(url: str) -> None:
    assert not allowed(url, PREFIX)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/files/x.cfg",
    "http://127.0.0.1:8000/files/v1..2/x.cfg",
    "http://127.0.0.1:8000/files/.hidden",
    "http://127.0.0.1:8000/files/a/b.c?x=..",
])
def test_ordinary_names_with_dots_stay_inside(url: str) -> None:
    assert allowed(url, PREFIX)
