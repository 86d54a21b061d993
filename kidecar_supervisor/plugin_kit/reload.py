"""Making the game load new files: a signal to its processes, or an HTTP call.

Shared by hot_update and file_sync (and open to third-party plugins), so both
accept exactly the same ``loadPatchType``/``signal``/``request`` settings and
reload the game the same way.

``signal`` mode needs ``shareProcessNamespace: true`` so the sidecar sees the
game's processes; it signals every process whose command line contains
``processName``, never this process or one of its ancestors (a processName
that happens to match the sidecar's own command line must not kill it).
``request`` mode calls the game's reload URL until it answers 2xx (or the
configured ``expectedStatus``) or the deadline passes, with backoff.

Status codes: 424 (Failed Dependency) when the game is not there at all: no
matching process, or a reload URL that never accepted a connection. 504 when
the game accepted the reload connection but never answered (it is running but
hung). 502 when the game answered the reload call with a failure until the
deadline. 500 when the signal could not be sent (e.g. permission denied).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psutil

from kidecar_supervisor.config_reader import ConfigReader

if TYPE_CHECKING:
    import requests

log = logging.getLogger("kidecar.reload")

#: how many reload attempts are reported back (the count is always exact)
REPORTED_ATTEMPTS = 10
LOAD_PATCH_TYPES = ("signal", "request")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")


@dataclass(frozen=True)
class SignalConfig:
    """Reload by signalling every process whose command line contains ``process_name``."""

    process_name: str
    signal_number: int = int(signal.SIGHUP)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signal_number).name

    @classmethod
    def parse(cls, reader: ConfigReader) -> SignalConfig:
        process_name = reader.str("processName")
        number = int(signal.SIGHUP)
        if reader.has("signalName"):
            number = parse_signal(reader.raw("signalName"), reader)
        reader.reject_unknown()
        return cls(process_name=process_name, signal_number=number)


@dataclass(frozen=True)
class RequestConfig:
    """Reload by calling the game's HTTP endpoint, retrying until 2xx or a deadline."""

    url: str
    method: str = "GET"
    timeout_seconds: float = 5.0
    deadline_seconds: float = 30.0
    expected_status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def is_success(self, status: int) -> bool:
        if self.expected_status is not None:
            return status == self.expected_status
        return 200 <= status < 300

    @classmethod
    def parse(cls, reader: ConfigReader) -> RequestConfig:
        url = reader.check_http_url("url", _request_url(reader))
        cfg = cls(
            url=url,
            method=reader.str("method", default="GET", choices=HTTP_METHODS).upper(),
            timeout_seconds=reader.number(
                "timeoutSeconds", "timeout", default=5.0, positive=True, maximum=3600
            ),
            deadline_seconds=reader.number(
                "deadlineSeconds", default=30.0, positive=True, maximum=86400
            ),
            expected_status=reader.int(
                "expectedStatus", "expectedStatusCode", default=None, minimum=100, maximum=599
            ),
            headers=tuple(sorted(reader.str_map("headers", default={}).items())),
        )
        reader.reject_unknown()
        return cfg


def _request_url(reader: ConfigReader) -> str:
    """``url``, or the Go kidecar's ``address`` + ``port`` (``{address: 127.0.0.1, port: 3000}``).

    ``address`` may carry a scheme and a path (``http://localhost/reload``); without
    them it is ``http://`` and ``/``. Both spellings at once would be two truths.
    """
    if not reader.has("address", "port"):
        return str(reader.str("url"))
    if reader.has("url"):
        raise reader.error("url", "give either url or address + port (the Go kidecar's "
                                  "spelling), not both")
    address = str(reader.str("address")).strip()
    port = reader.int("port", minimum=1, maximum=65535)
    if "://" not in address and address.count(":") > 1 and not address.startswith("["):
        address = f"[{address}]"  # a bare IPv6 address
    text = address if "://" in address else f"http://{address}"
    try:
        parts = urlsplit(text)
        given = parts.port
    except ValueError as exc:
        raise reader.error("address", f"is not a host or URL: {exc}") from None
    if not parts.hostname or parts.query or parts.fragment:
        raise reader.error("address", f"must be a host, optionally with scheme and path, "
                                      f"got {address!r}")
    if given is not None and given != port:
        raise reader.error("port", f"is {port} but address {address!r} names port {given}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}{parts.path or '/'}"


def parse_signal(value: Any, reader: ConfigReader, name: str = "signalName") -> int:
    """``SIGHUP``, ``HUP``, ``sighup`` or a number → the signal number; else a ConfigError."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return int(signal.Signals(value))
        except ValueError:
            raise reader.error(name, f"{value} is not a signal number") from None
    if not isinstance(value, str) or not value.strip():
        raise reader.error(name, f"must be a signal name like SIGHUP, got {value!r}")
    text = value.strip().upper()
    key = text if text.startswith("SIG") else "SIG" + text
    try:
        return int(signal.Signals[key])
    except KeyError:
        known = ", ".join(s.name for s in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2))
        raise reader.error(name, f"unknown signal {value!r} (e.g. {known})") from None




class ReloadError(Exception):
    """The reload failed; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields


class GameNotRunning(ReloadError):
    """Nothing to reload: no matching process / the reload URL never connected."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(424, message, **fields)


@dataclass(frozen=True)
class ReloadOutcome:
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def find_processes(process_name: str) -> list[int]:
    """Pids of live processes whose command line contains ``process_name``, never kidecar's own.

    Excluded: this process, its ancestors (the supervisor) and every process
    with exactly our command line: the supervisor forks its children without
    exec, so the HTTP child (which runs the store) carries the same command line as
    this one, while a program the ``binary`` plugin runs has its own. Reads
    ``/proc/<pid>/cmdline`` directly: a scan costs well under a millisecond
    even with hundreds of processes (zombies have an empty command line).
    """
    me = psutil.Process()
    excluded = {me.pid, *(p.pid for p in _parents(me))}
    own_cmdline = _cmdline(me.pid)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in excluded:
            continue
        cmdline = _cmdline(int(entry))
        if process_name in cmdline and cmdline != own_cmdline:
            found.append(int(entry))
    return sorted(found)


def _cmdline(pid: int) -> str:
    """The command line as ``ps`` shows it (NULs as spaces); "" if gone or unreadable."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")


def _parents(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.parents()
    except psutil.Error:
        return []


def signal_reload(cfg: SignalConfig) -> ReloadOutcome:
    """Send the configured signal to every matching process; raise ReloadError if none got it."""
    signalled: list[int] = []
    refused: dict[int, str] = {}
    for pid in find_processes(cfg.process_name):
        try:
            os.kill(pid, cfg.signal_number)
            signalled.append(pid)
        except ProcessLookupError:
            continue
        except PermissionError as exc:
            refused[pid] = exc.strerror or str(exc)
    if refused:
        advice = permission_advice(sorted(refused))
        log.error("the kernel refused %s to pid(s) %s: %s", cfg.signal_name, sorted(refused),
                  advice)
        if not signalled:
            raise ReloadError(500, f"cannot send {cfg.signal_name} to the game process(es) "
                              f"{sorted(refused)}: {advice}", pids=sorted(refused),
                              needs=advice)
    if not signalled:
        raise GameNotRunning(not_found_message(cfg))
    log.info("sent %s to %s (processName %r)", cfg.signal_name, signalled, cfg.process_name)
    return ReloadOutcome(f"sent {cfg.signal_name} to pid(s) {', '.join(map(str, signalled))}",
                         {"pids": signalled, "signal": cfg.signal_name})


#: CAP_KILL's bit in /proc/<pid>/status CapEff (linux/capability.h)
CAP_KILL_BIT = 5


def permission_advice(pids: list[int]) -> str:
    """What the pod needs so the kernel lets kidecar signal ``pids`` (EPERM from kill(2)).

    The kernel allows a signal when the sender has CAP_KILL or its real or effective
    UID equals the target's real or saved UID, so the fix is one of exactly two
    pod settings; the message names both with the UIDs involved.
    """
    game_uids = sorted({uid for uid in (_process_uid(pid) for pid in pids) if uid is not None})
    game = ", ".join(map(str, game_uids)) if game_uids else "another uid"
    mine = os.geteuid()
    cap = "with" if _has_cap_kill() else "without"
    return (f"the game runs as uid {game} and kidecar as uid {mine} {cap} CAP_KILL: run "
            f"kidecar as the game's uid (securityContext.runAsUser: {game_uids[0] if game_uids else 'N'}) "
            "or add the KILL capability (securityContext.capabilities.add: [KILL], "
            "as root; see docs/deploy.md)")


def _process_uid(pid: int) -> int | None:
    """The real UID of ``pid`` (what the kernel compares), None if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _has_cap_kill() -> bool:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_KILL_BIT & 1)
    except (OSError, ValueError, IndexError):
        return False
    return False


def not_found_message(cfg: SignalConfig) -> str:
    return (f"process not found: no process's command line contains {cfg.process_name!r} "
            "(is the game running, and does the pod set shareProcessNamespace: true?)")


def request_reload(cfg: RequestConfig, cancel: threading.Event | None = None) -> ReloadOutcome:
    """Call the reload URL until success or ``deadlineSeconds``; raise ReloadError otherwise."""
    cancel = cancel if cancel is not None else threading.Event()
    started = time.monotonic()
    deadline = started + cfg.deadline_seconds
    attempts: list[dict[str, Any]] = []
    delay = 0.2
    connected = False
    while True:
        remaining = deadline - time.monotonic()
        attempt = _attempt(cfg, max(0.05, min(cfg.timeout_seconds, remaining)))
        attempt["attempt"] = len(attempts) + 1
        attempts.append(attempt)
        connected = connected or "status" in attempt
        if "status" in attempt and cfg.is_success(attempt["status"]):
            return ReloadOutcome(
                f"{cfg.method} {cfg.url} answered {attempt['status']} "
                f"on attempt {len(attempts)}",
                {"attempts": len(attempts), "history": attempts[-REPORTED_ATTEMPTS:]},
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0 or cancel.wait(min(delay, remaining)):
            break
        delay = min(delay * 2, 5.0)
    raise _request_failure(cfg, attempts, connected, time.monotonic() - started)


def _attempt(cfg: RequestConfig, timeout: float) -> dict[str, Any]:
    import requests  # here, not at the top: only a process that calls it loads it (issue 16)

    begun = time.monotonic()
    try:
        response = requests.request(cfg.method, cfg.url, timeout=timeout,
                                    headers=dict(cfg.headers), allow_redirects=False)
        response.close()
        outcome: dict[str, Any] = {"status": response.status_code}
    except requests.ReadTimeout:
        # connected, request sent, no answer: the game is there but hung
        outcome = {"error": f"accepted the connection, no answer within {timeout:.1f}s",
                   "hung": True}
    except requests.RequestException as exc:
        outcome = {"error": _short_error(exc)}
    outcome["ms"] = round((time.monotonic() - begun) * 1000, 1)
    return outcome


def _short_error(exc: requests.RequestException) -> str:
    import requests

    text = str(exc)
    if "refused" in text.lower():
        return "connection refused"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return f"{type(exc).__name__}: {text[:200]}"


def _request_failure(cfg: RequestConfig, attempts: list[dict[str, Any]], connected: bool,
                     elapsed: float) -> ReloadError:
    last = attempts[-1]
    fields = {"attempts": len(attempts), "history": attempts[-REPORTED_ATTEMPTS:]}
    summary = f"{len(attempts)} attempt(s) in {elapsed:.1f}s"
    if not connected and any(attempt.get("hung") for attempt in attempts):
        return ReloadError(
            504, f"reload failed: the game accepted {cfg.method} {cfg.url} but never "
            f"answered ({summary}, timeoutSeconds {cfg.timeout_seconds:g}): it is running "
            "but its reload hangs", **fields,
        )
    if not connected:
        return GameNotRunning(
            f"reload failed: {cfg.method} {cfg.url} never answered ({last.get('error')}; "
            f"{summary}); is the game running?", **fields,
        )
    wanted = cfg.expected_status if cfg.expected_status is not None else "2xx"
    outcome = f"answered {last['status']}" if "status" in last else last.get("error")
    return ReloadError(
        502, f"reload failed: {cfg.method} {cfg.url} {outcome}, expected {wanted} "
        f"({summary}, deadlineSeconds {cfg.deadline_seconds:g})",
        lastStatus=last.get("status"), **fields,
    )
