"""URLs as kidecar shows and stores them: without the secrets they may carry.

A download URL often carries a credential: ``user:pass@`` or a pre-signed
query string (``?X-Amz-Signature=...``, ``?token=...``). The download uses the
full URL; everything else (the pod annotation, the result store, Events,
logs, ``GET /hot-update``, the history and kept-version files in the state
dir) gets :func:`redact`'s form, which keeps scheme, host, port and path
(DESIGN §5) and marks what it took away with ``***``, so a reader can tell a
redacted URL from a complete one.

``allowedUrlPrefixes`` is matched on the same secret-free form, on a path
boundary: ``https://cdn.example.com/games`` allows ``.../games/x.lua`` but
neither ``.../games-evil/x.lua`` nor ``https://cdn.example.com.evil.net/``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

MARK = "***"


def redact(url: str) -> str:
    """``url`` without userinfo, query and fragment (each replaced by ``***``)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return _cut(url)
    if parts.scheme.lower() not in ("http", "https", "file"):
        return _cut(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port is not None else "")
    if "@" in parts.netloc:
        netloc = f"{MARK}@{netloc}"
    out = f"{parts.scheme.lower()}://{netloc}{parts.path}"
    if parts.query or url.rstrip().endswith("?"):
        out += "?" + MARK
    if parts.fragment:
        out += "#" + MARK
    return out


_QUERY = re.compile(r"\?[^\s'\")\]]+")
_USERINFO = re.compile(r"//[^/\s@'\"]+@")


def scrub(text: str) -> str:
    """Free text (an exception's message) with any query string or userinfo in it masked."""
    return _USERINFO.sub(f"//{MARK}@", _QUERY.sub(f"?{MARK}", text))


def _cut(url: str) -> str:
    """A URL that does not parse: keep what comes before any ``@``, ``?`` or ``#``."""
    for mark in ("?", "#"):
        url = url.split(mark, 1)[0]
    return url.rsplit("@", 1)[-1] if "@" in url else url


def is_redacted(url: str) -> bool:
    """True if :func:`redact` took something away from this URL."""
    return MARK in url


def base(url: str) -> str:
    """scheme://host[:port]/path, lower-case scheme and host: what prefixes are matched on."""
    out = redact(url)
    out = out.split("?", 1)[0].split("#", 1)[0]
    return out.replace(f"{MARK}@", "", 1)


def allowed(url: str, prefixes: tuple[str, ...]) -> bool:
    """True if there are no prefixes, or ``url`` starts with one on a path boundary."""
    if not prefixes:
        return True
    target = base(url)
    if _has_dot_segments(target):
        return False  # the client resolves /files/../other to /other: outside /files/
    for prefix in prefixes:
        wanted = base(prefix)
        if target == wanted:
            return True
        if target.startswith(wanted) and (wanted.endswith("/") or
                                          target[len(wanted)] == "/"):
            return True
    return False


def _has_dot_segments(url: str) -> bool:
    """A ``.`` or ``..`` path segment, also percent-encoded or behind a backslash (which
    some servers take for a slash): found while proving the fuzz run stays in its prefix."""
    path = urlsplit(url).path
    segments = unquote(path).replace("\\", "/").split("/")
    return any(segment in (".", "..") for segment in segments)
