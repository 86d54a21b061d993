"""One HTTP probe of one endpoint, and the kubelet-style thresholds on its results.

The client is ``http.client`` with one kept-alive connection per endpoint: a
probe every second for dozens of endpoints must cost next to nothing, and
``requests`` would add ~27 MiB RSS and a connection pool per plugin process
for no benefit. ``timeout`` bounds the whole probe (connect, send, headers
and body), not each socket operation, so a slowly dripping answer fails too.

Failure = refused/reset connection, timeout, a status other than
``expectedStatusCode``, an answer over 1 MiB, or (with ``jsonPathConfig``) an
answer that is not JSON, has no value at the path or a value of the wrong type.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kidecar_supervisor.plugin_kit.jsonpath import MISSING
from workers.http_probe.config import EndpointConfig, JsonPathConfig

#: the state a failing endpoint is in once failureThreshold is reached
FAILED = "Failed"
MAX_BODY = 1 << 20
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


@dataclass(frozen=True)
class ProbeResult:
    """What one probe saw: a state, or an error."""

    ok: bool
    state: str = ""
    error: str = ""
    status: int | None = None
    elapsed: float = 0.0


class ProbeError(Exception):
    """A probe failure with a message fit for status() and logs."""


# -- the state out of an answer -------------------------------------------------------
def extract_state(body: bytes, json_path: JsonPathConfig | None) -> str:
    """The state an answer means: trimmed text, or the rendered value at the path."""
    text = body.decode("utf-8", errors="replace")
    if json_path is None:
        return text.strip()
    try:
        document = json.loads(text)
    except ValueError:
        raise ProbeError(f"answer is not JSON (needed for {json_path.path})") from None
    value = json_path.path.find(document)
    if value is MISSING:
        raise ProbeError(f"answer has no value at {json_path.path}")
    return render_value(value, json_path)


def render_value(value: Any, json_path: JsonPathConfig) -> str:
    """``value`` as a state string, checked against ``fieldType``."""
    kind = json_path.field_type
    if kind == "string":
        if isinstance(value, str):
            return value
        if _is_number(value):
            return _render_number(value)
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if kind == "bool":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower()
        raise ProbeError(f"value at {json_path.path} is not a bool: {value!r}")
    number = _as_number(value, json_path)
    if kind == "int":
        if number != int(number):
            raise ProbeError(f"value at {json_path.path} is not an integer: {value!r}")
        return str(int(number))
    return _render_number(number)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_number(value: Any, json_path: JsonPathConfig) -> float | int:
    if _is_number(value):
        number: float | int = value
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ProbeError(f"value at {json_path.path} is not a number: {value!r}") from None
    else:
        raise ProbeError(f"value at {json_path.path} is not a number: {value!r}")
    if number != number or number in (float("inf"), float("-inf")):
        raise ProbeError(f"value at {json_path.path} is not a finite number: {value!r}")
    return number


def _render_number(number: float | int) -> str:
    if isinstance(number, float) and number.is_integer():
        return str(int(number))
    return repr(number)


# -- the HTTP client ----------------------------------------------------------------
class HttpProber:
    """Probes one endpoint; keeps its connection alive between probes.

    Not thread-safe: one prober belongs to one endpoint's probing thread.
    ``abort()`` may be called from another thread to unblock it at stop.
    """

    def __init__(self, endpoint: EndpointConfig) -> None:
        self.endpoint = endpoint
        parts = urlsplit(endpoint.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        defaults = {"Host": parts.netloc, "User-Agent": "kidecar-http-probe"}
        configured = {name.lower() for name, _ in endpoint.headers}
        self._headers = {k: v for k, v in defaults.items() if k.lower() not in configured}
        self._headers.update(dict(endpoint.headers))
        self._conn: http.client.HTTPConnection | None = None
        self._aborted = False

    def probe(self) -> ProbeResult:
        started = time.monotonic()
        deadline = started + self.endpoint.timeout
        # socket timeouts restart with every byte: a game that drips its headers would
        # hold the probe far past its timeout, so the watchdog cuts it at the deadline
        ticket = _WATCHDOG.arm(deadline, self._expire)
        try:
            return self._probe(started, deadline)
        finally:
            _WATCHDOG.disarm(ticket)

    def _expire(self) -> None:
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _probe(self, started: float, deadline: float) -> ProbeResult:
        expired = _WATCHDOG.expired
        try:
            status, body = self._request(deadline)
            if status != self.endpoint.expected_status_code:
                raise ProbeError(f"status {status}, expected {self.endpoint.expected_status_code}")
            state = extract_state(body, self.endpoint.json_path)
            return ProbeResult(True, state, status=status, elapsed=time.monotonic() - started)
        except ProbeError as exc:
            return ProbeResult(False, error=str(exc), elapsed=time.monotonic() - started)
        except TimeoutError:
            self.close()
            return ProbeResult(False, error=f"timed out after {self.endpoint.timeout:g}s",
                               elapsed=time.monotonic() - started)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            if expired(deadline):
                return ProbeResult(False, error=f"timed out after {self.endpoint.timeout:g}s",
                                   elapsed=time.monotonic() - started)
            return ProbeResult(False, error=_describe(exc), elapsed=time.monotonic() - started)

    def _request(self, deadline: float) -> tuple[int, bytes]:
        reused = self._conn is not None
        try:
            return self._exchange(deadline)
        except _STALE_CONNECTION:
            # the server closed an idle kept-alive connection: one fresh try
            self.close()
            if not reused or self._aborted:
                raise
            return self._exchange(deadline)

    def _exchange(self, deadline: float) -> tuple[int, bytes]:
        conn = self._connection(_remaining(deadline))
        conn.request(self.endpoint.method, self._target, headers=self._headers)
        self._set_timeout(conn, deadline)
        response = conn.getresponse()
        body = self._read_body(conn, response, deadline)
        if response.will_close:
            self.close()
        return response.status, body

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                context = ssl.create_default_context()
                context.check_hostname = False  # like the kubelet's https probes
                context.verify_mode = ssl.CERT_NONE
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=context
                )
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        else:
            self._conn.timeout = timeout
            if self._conn.sock is not None:
                self._conn.sock.settimeout(timeout)
        return self._conn

    def _read_body(
        self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, deadline: float
    ) -> bytes:
        """Read the body chunk by chunk, re-arming the socket timeout to the deadline."""
        chunks: list[bytes] = []
        size = 0
        while not response.isclosed():
            if response.length == 0:
                response.read()  # marks the response done, so the connection can be reused
                break
            self._set_timeout(conn, deadline)
            chunk = response.read1(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BODY:
                self.close()
                raise ProbeError(f"answer larger than {MAX_BODY} bytes")
        if not response.isclosed():
            self.close()
        return b"".join(chunks)

    @staticmethod
    def _set_timeout(conn: http.client.HTTPConnection, deadline: float) -> None:
        if conn.sock is not None:
            conn.sock.settimeout(_remaining(deadline))

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def abort(self) -> None:
        """Unblock a probe in progress (from another thread), e.g. at stop."""
        self._aborted = True
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Watchdog:
    """One thread for every prober: shuts a probe's socket at its deadline."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int, Any]] = []
        self._cancelled: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, expire: Any) -> int:
        ticket = next(self._ids)
        with self._lock:
            heapq.heappush(self._heap, (deadline, ticket, expire))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="probe-watchdog",
                                                daemon=True)
                self._thread.start()
            self._lock.notify()
        return ticket

    def disarm(self, ticket: int) -> None:
        with self._lock:
            self._cancelled.add(ticket)

    @staticmethod
    def expired(deadline: float) -> bool:
        return time.monotonic() >= deadline

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._heap and self._heap[0][1] in self._cancelled:
                    self._cancelled.discard(heapq.heappop(self._heap)[1])
                if not self._heap:
                    self._lock.wait()
                    continue
                deadline, ticket, expire = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._lock.wait(wait)
                    continue
                heapq.heappop(self._heap)
            try:
                expire()
            except Exception:  # noqa: BLE001 - a watchdog must outlive any prober
                pass


_WATCHDOG = _Watchdog()


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    return remaining


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "connection closed without an answer"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# -- thresholds --------------------------------------------------------------------------
class ThresholdTracker:
    """Kubelet-style success/failure thresholds over an endpoint's probe results.

    A new state is *applied* only after ``success_threshold`` consecutive
    probes saw it; a failure or a different state in between restarts the
    count, so one odd answer never flips anything. ``failure_threshold``
    consecutive failures apply ``FAILED``. ``marker_state`` is the state
    whose markers should be in place: it follows ``applied``, except that
    ``FAILED`` without a ``Failed`` policy leaves the previous markers as they
    are (a game that stopped answering has not told us anything new).
    """

    def __init__(self, success_threshold: int, failure_threshold: int,
                 has_failed_policy: bool) -> None:
        self.success_threshold = success_threshold
        self.failure_threshold = failure_threshold
        self.has_failed_policy = has_failed_policy
        self.applied: str | None = None
        self.marker_state: str | None = None
        self.candidate: str | None = None
        self.candidate_count = 0
        self.consecutive_failures = 0

    def observe(self, result: ProbeResult) -> bool:
        """Feed one result; True when ``marker_state`` changed."""
        if result.ok:
            return self._success(result.state)
        return self._failure()

    def _success(self, state: str) -> bool:
        self.consecutive_failures = 0
        if state == self.applied:
            self.candidate, self.candidate_count = None, 0
            return False
        if state == self.candidate:
            self.candidate_count += 1
        else:
            self.candidate, self.candidate_count = state, 1
        if self.candidate_count < self.success_threshold:
            return False
        self.candidate, self.candidate_count = None, 0
        return self._apply(state)

    def _failure(self) -> bool:
        self.candidate, self.candidate_count = None, 0
        self.consecutive_failures += 1
        if self.consecutive_failures < self.failure_threshold or self.applied == FAILED:
            return False
        return self._apply(FAILED)

    def _apply(self, state: str) -> bool:
        self.applied = state
        if state == FAILED and not self.has_failed_policy:
            return False
        changed = state != self.marker_state
        self.marker_state = state
        return changed
