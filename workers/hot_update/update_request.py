"""Validation of one ``POST /hot-update`` (version, url, optional sha256).

Everything a caller can get wrong is refused here, before any byte is
downloaded or any file touched, with a 400 that says what to send instead.
The file name comes from the URL path's last segment, percent-decoded, so a
URL like ``.../..%2F..%2Fetc%2Fpasswd`` can never write outside ``fileDir``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from kidecar_supervisor.plugin_api import PluginCallError
from workers.hot_update.url_redaction import allowed, redact

#: label-safe (DESIGN §5): 1-63 of [A-Za-z0-9._-], alphanumeric at both ends; the seeds'
#: v2 / v1.2.3 and build ids such as 1.4.2-hotfix3 or 2026.11.29-b42 all match
VERSION_PATTERN = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?", re.ASCII)
SHA256_PATTERN = re.compile(r"[0-9a-fA-F]{64}")
KNOWN_PARAMS = ("version", "url", "sha256")
# 255 bytes is the filesystem's limit; the backup copy's prefix needs room too
MAX_NAME_BYTES = 255 - len(".kidecar-prev-")
MAX_URL_CHARS = 8192


@dataclass(frozen=True)
class UpdateRequest:
    """A validated hot-update request."""

    version: str
    url: str
    file_name: str
    sha256: str = ""

    @property
    def shown_url(self) -> str:
        """The URL as logs, results, Events and the status show it: no credentials."""
        return redact(self.url)


def parse_update_request(params: Any, allow_file_urls: bool,
                         allowed_prefixes: tuple[str, ...] = ()) -> UpdateRequest:
    """Check ``params`` (form or JSON fields) and return the request, or raise 400/403.

    A URL outside ``allowed_prefixes`` is a 403, decided here: before any connection.
    """
    if not isinstance(params, dict):
        raise PluginCallError(400, "expected the fields version and url (form or JSON object)")
    unknown = sorted(str(k) for k, v in params.items() if k not in KNOWN_PARAMS and v is not None)
    if unknown:
        raise PluginCallError(
            400, f"unknown field(s) {', '.join(unknown)}; accepted: {', '.join(KNOWN_PARAMS)}"
        )
    version = _text(params, "version", "e.g. version=v2")
    if not VERSION_PATTERN.fullmatch(version):
        raise PluginCallError(
            400, f"version {version!r} is malformed: it must be label-safe, 1-63 characters "
            "of letters, digits, '.', '_' and '-', starting and ending with a letter or digit "
            "(e.g. v2, 1.4.2-hotfix3, 2026.11.29-b42)", field="version",
        )
    url = _text(params, "url", "e.g. url=https://example.com/files/index.html")
    file_name = _file_name(url, allow_file_urls)
    if not allowed(url, allowed_prefixes):
        raise PluginCallError(
            403, f"url {redact(url)} is not under any of allowedUrlPrefixes "
            f"({', '.join(allowed_prefixes)}); nothing was downloaded", field="url",
        )
    sha256 = params.get("sha256") or ""
    if sha256:
        if not isinstance(sha256, str) or not SHA256_PATTERN.fullmatch(sha256.strip()):
            raise PluginCallError(
                400, "sha256 must be 64 hexadecimal characters (the file's SHA-256 digest)",
                field="sha256",
            )
        sha256 = sha256.strip().lower()
    return UpdateRequest(version=version, url=url, file_name=file_name, sha256=sha256)


def _text(params: dict[str, Any], name: str, example: str) -> str:
    value = params.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise PluginCallError(400, f"{name} is required ({example})", field=name)
    if not isinstance(value, str):
        raise PluginCallError(400, f"{name} must be a string, got {type(value).__name__}",
                              field=name)
    return value.strip()


def _file_name(url: str, allow_file_urls: bool) -> str:
    """The URL path's basename, percent-decoded, refused if it could escape or hide."""
    if len(url) > MAX_URL_CHARS:
        raise PluginCallError(400, f"url is longer than {MAX_URL_CHARS} characters", field="url")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise PluginCallError(400, f"url {redact(url)!r} is not a valid URL: {exc}",
                              field="url") from None
    scheme = parts.scheme.lower()
    if scheme == "file":
        if not allow_file_urls:
            raise PluginCallError(
                400, "file:// URLs are not allowed (only with storageConfig.type Local and "
                "allowFileUrls: true); use an http(s) URL", field="url",
            )
    elif scheme not in ("http", "https"):
        raise PluginCallError(
            400, "url must be http:// or https://, got "
            f"{scheme + '://' if scheme else redact(url)!r}",
            field="url",
        )
    elif not parts.hostname:
        raise PluginCallError(400, f"url {redact(url)!r} has no host", field="url")
    else:
        try:
            parts.port  # noqa: B018 - raises for a port out of range
        except ValueError as exc:
            raise PluginCallError(400, f"url {redact(url)!r} has a bad port: {exc}",
                                  field="url") from None
        if any(ch.isspace() for ch in parts.netloc):
            raise PluginCallError(400, f"url {redact(url)!r} has white space in its host",
                                  field="url")
    raw_name = parts.path.rsplit("/", 1)[-1]
    name = unquote(raw_name)
    problem = _name_problem(name)
    if problem:
        raise PluginCallError(
            400, f"url must end in a plain file name (the name the file gets in fileDir): "
            f"{problem}", field="url", fileName=name,
        )
    return name


def _name_problem(name: str) -> str:
    if not name:
        return "the URL path is empty or ends with '/'"
    if name in (".", ".."):
        return f"{name!r} is not a file name"
    if "/" in name or "\\" in name or "\x00" in name:
        return f"the decoded name {name!r} contains a path separator or NUL"
    if name.startswith("."):
        return f"hidden names like {name!r} are refused"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return f"the name is longer than {MAX_NAME_BYTES} bytes"
    if any(ord(c) < 32 for c in name):
        return "the name contains control characters"
    return ""
