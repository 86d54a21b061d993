"""Confirmation: the game itself says which version it loaded (DESIGN §9).

A signal that was sent is not a version that was loaded. With ``confirm``
configured, an update succeeds only once the game reports the requested
version, read from an HTTP endpoint (``confirm.http {url, jsonPath}``: the
body trimmed, or the value at jsonPath) or from a file the game writes
(``confirm.file {path}``). ``errorJsonPath`` names a field whose non-empty
value is a NACK: the game refused the file, fail at once instead of waiting
for the timeout. A game process that died after the reload is a NACK too.
Neither an ACK nor a NACK within ``timeoutSeconds``: failure.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from kidecar_supervisor.plugin_api import ConfigReader
from kidecar_supervisor.plugin_kit.jsonpath import MISSING, JsonPath, JsonPathError, compile_path

log = logging.getLogger("kidecar.hot_update.confirm")

#: one read of the confirm source may take at most this long (the timeout still bounds the wait)
READ_TIMEOUT_SECONDS = 2.0
#: a body or file larger than this is not a version report
MAX_REPORT_BYTES = 64 * 1024


@dataclass(frozen=True)
class ConfirmConfig:
    """Where the game reports what it loaded, and how long to wait for it."""

    http_url: str = ""
    json_path: JsonPath | None = None
    file_path: str = ""
    error_json_path: JsonPath | None = None
    timeout_seconds: float = 30.0
    interval_seconds: float = 0.5

    @property
    def source(self) -> str:
        """For messages: where the version is read."""
        return self.http_url or self.file_path

    @classmethod
    def parse(cls, reader: ConfigReader) -> ConfirmConfig:
        http = reader.child("http")
        file = reader.child("file")
        if (http is None) == (file is None):
            raise reader.error("http", "set exactly one of confirm.http {url, jsonPath} or "
                               "confirm.file {path}")
        url, json_path, path = "", None, ""
        if http is not None:
            url = http.check_http_url("url", http.str("url"))
            json_path = _path(http, "jsonPath")
            http.reject_unknown()
        if file is not None:
            path = file.str("path")
            if not path.startswith("/"):
                raise file.error("path", f"must be an absolute path, got {path!r}")
            file.reject_unknown()
        cfg = cls(
            http_url=url, json_path=json_path, file_path=path,
            error_json_path=_path(reader, "errorJsonPath"),
            timeout_seconds=reader.number("timeoutSeconds", default=30.0, positive=True,
                                          maximum=3600),
            interval_seconds=reader.number("intervalSeconds", default=0.5, positive=True,
                                           maximum=60),
        )
        reader.reject_unknown()
        return cfg


def _path(reader: ConfigReader, name: str) -> JsonPath | None:
    text = reader.str(name, default="")
    if not text:
        return None
    try:
        return compile_path(text)
    except JsonPathError as exc:
        raise reader.error(name, str(exc)) from None


@dataclass(frozen=True)
class Report:
    """One read of the confirm source: the loaded version, the game's error, or why neither."""

    version: str | None = None
    error: str = ""
    unreadable: str = ""


class ConfirmFailed(Exception):
    """No ACK: ``reason`` says what the game said (NACK), that it died, or that time ran out."""

    def __init__(self, reason: str, nack: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.nack = nack


def read_report(cfg: ConfirmConfig) -> Report:
    """Read the confirm source once; never raises."""
    try:
        raw = _read_raw(cfg)
    except (OSError, ValueError) as exc:  # requests' errors are OSErrors
        return Report(unreadable=f"{type(exc).__name__}: {str(exc)[:200]}")
    if raw is None:
        return Report(unreadable="no report yet")
    return _parse_report(cfg, raw)


def _read_raw(cfg: ConfirmConfig) -> bytes | None:
    if cfg.file_path:
        try:
            with open(cfg.file_path, "rb") as handle:
                return handle.read(MAX_REPORT_BYTES)
        except FileNotFoundError:
            return None
    import requests  # here, not at the top: only a process that calls it loads it (issue 16)
    import urllib3

    with requests.get(cfg.http_url, timeout=READ_TIMEOUT_SECONDS, stream=True,
                      allow_redirects=False) as response:
        if response.status_code != 200:
            raise ValueError(f"{cfg.http_url} answered {response.status_code}")
        try:
            return bytes(response.raw.read(MAX_REPORT_BYTES, decode_content=True))
        except urllib3.exceptions.HTTPError as exc:  # a game dying mid-answer: unreadable
            raise OSError(f"{cfg.http_url}: {exc}") from exc


def _parse_report(cfg: ConfirmConfig, raw: bytes) -> Report:
    text = raw.decode("utf-8", "replace")
    if cfg.json_path is None and cfg.error_json_path is None:
        return Report(version=text.strip())
    try:
        document = json.loads(text)
    except ValueError:
        return Report(unreadable=f"not JSON: {text[:80]!r}")
    error = ""
    if cfg.error_json_path is not None:
        value = cfg.error_json_path.find(document)
        if value is not MISSING and value not in (None, "", False, [], {}):
            error = value if isinstance(value, str) else json.dumps(value)
    if cfg.json_path is None:
        return Report(version=text.strip(), error=error)
    value = cfg.json_path.find(document)
    if value is MISSING or value is None:
        return Report(error=error, unreadable=f"no value at {cfg.json_path}")
    return Report(version=str(value).strip(), error=error)


def wait_for_version(cfg: ConfirmConfig, expected: str | None, pids: list[int],
                     cancel: threading.Event, refused: str = "", stale_error: str = "") -> str:
    """Wait for the ACK of ``expected``; return the version the game reports.

    ``expected`` None: any version other than ``refused`` counts (a rollback to
    files kidecar never knew the version of). ``pids``: the processes the reload
    signalled; all of them gone is a NACK (the game died loading the file).
    ``stale_error``: the error the game reported before the reload, which is no
    NACK of this reload (the game may answer before it handled the signal).
    Raises ConfirmFailed on a NACK, a death, or the timeout.
    """
    deadline = time.monotonic() + cfg.timeout_seconds
    last = Report(unreadable="not read yet")
    while True:
        last = read_report(cfg)
        if last.version is not None and _acked(last.version, expected, refused):
            if not last.error:
                return last.version
        if last.error and last.error != stale_error:
            raise ConfirmFailed(f"the game reported an error: {last.error}", nack=True)
        if pids and not any(_alive(pid) for pid in pids):
            raise ConfirmFailed(f"the game process(es) {pids} died after the reload", nack=True)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or cancel.wait(min(cfg.interval_seconds, remaining)):
            break
    seen = f"it reports {last.version!r}" if last.version is not None else last.unreadable
    want = repr(expected) if expected is not None else f"a version other than {refused!r}"
    raise ConfirmFailed(f"the game did not report {want} within {cfg.timeout_seconds:g}s "
                        f"at {cfg.source} ({seen})", nack=False)


def _acked(reported: str, expected: str | None, refused: str) -> bool:
    if expected is not None:
        return reported == expected
    return bool(reported) and reported != refused


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as dead: it loads nothing)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return fields[0] != b"Z"
    except (OSError, IndexError):
        return False


def current_error(cfg: ConfirmConfig | None) -> str:
    """The error the game reports now (before a reload): not a NACK of the next one."""
    return read_report(cfg).error if cfg is not None else ""


def loaded_version(cfg: ConfirmConfig) -> str | None:
    """The version the game reports right now (one read), or None; for naming a kept copy."""
    report = read_report(cfg)
    return report.version or None if not report.error else None


def describe(cfg: ConfirmConfig) -> dict[str, Any]:
    """For ``GET /hot-update``: where and how long confirmation is awaited."""
    return {"source": cfg.source, "timeoutSeconds": cfg.timeout_seconds}


