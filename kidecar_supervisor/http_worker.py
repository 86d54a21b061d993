"""The HTTP child's gunicorn worker: no client can hold a thread it does not use.

gunicorn's gthread worker hands a connection to a pool thread as soon as its
socket is readable; the thread then blocks reading the rest of the request
head. Eight clients that send half a head (``GET / HTTP/1.1\\r\\nHost: x\\r\\n``
and nothing more) took all eight threads, and the kubelet's ``/healthz`` probe
queued behind them until the pod was restarted (issue 17).

This worker reads request heads in its poller, without blocking and without a
thread: a connection reaches a thread only once its whole head is there. While
it waits, a connection is bounded three ways:

* a head must be complete ``headerTimeoutSeconds`` after its first byte (an
  idle kept-alive connection gets gunicorn's keep-alive timeout instead);
* at most ``maxConnections`` connections wait at once; beyond that the oldest
  waiting one is closed (a flood evicts itself, never a request being served);
* a head larger than gunicorn's limits is answered 414/431 at once.

A small body of declared length is gathered the same way (by
``bodyTimeoutSeconds``), so a client trickling its body holds no thread either.

Probes (``GET /healthz``, ``/readyz``, ``/metrics`` without a body) run on
their own small thread pool, so user requests (a long hot update, a client
trickling a body) never queue in front of them. Every error is JSON, like the
app's own, instead of gunicorn's HTML.
"""

from __future__ import annotations

import errno
import json
import selectors
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from functools import partial
from typing import Any

from gunicorn.http import errors as http_errors
from gunicorn.http.parser import RequestParser
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

#: requests that must answer whatever other clients do (liveness, readiness, scrapes)
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
PROBE_THREADS = 2
#: a refused or finished connection is drained this long so the client reads the answer
LINGER_SECONDS = 2.0
_RECV_BYTES = 65536
_REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large",
            414: "URI Too Long", 417: "Expectation Failed", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable"}


@dataclass(frozen=True)
class ConnectionLimits:
    """What a client may cost the worker; from ``http:`` in the config."""

    header_timeout: float = 5.0
    body_timeout: float = 10.0
    keepalive: float = 5.0
    max_connections: int = 64
    max_request_line: int = 4094
    max_head_bytes: int = 32768
    #: a request declaring a larger body is answered (413 by the app) and closed, never drained
    max_body_bytes: int = 65536
    #: requests with a full head waiting for a busy thread, beyond which 503
    max_queued: int = 64

    def most_connections(self, threads: int) -> int:
        """Connections open at once at most (gunicorn's accept cap must stay above it)."""
        return self.max_connections + threads + PROBE_THREADS + 2 * self.max_queued


class RequestReadTimeout(Exception):
    """The client did not send its request (head or body) within the deadline.

    Not an OSError on purpose: werkzeug turns a stream's OSError into "client
    disconnected" (400); this one must reach the app's handler as a 408.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds

    def __str__(self) -> str:
        return f"request not received within {self.seconds:g}s"


class DeadlineUnreader(SocketUnreader):
    """Reads a request (head already buffered, then the body) by a fixed deadline.

    A per-recv timeout alone lets a client trickle one byte per interval
    forever; the deadline bounds the whole request.
    """

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        super().__init__(sock)
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def chunk(self, size_hint: int | None = None) -> bytes:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise RequestReadTimeout(self.seconds)
        previous = self.sock.gettimeout()
        self.sock.settimeout(remaining)
        try:
            data: bytes = super().chunk(size_hint)
            return data
        except TimeoutError:
            raise RequestReadTimeout(self.seconds) from None
        finally:
            self.sock.settimeout(previous)


class WaitingConn(TConn):
    """A connection the poller owns: reading its head, idle, or lingering after an answer."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any) -> None:
        super().__init__(cfg, sock, client, server)
        self.head = bytearray()
        self.awaiting_body = False
        self.lingering = False
        self.probe = False


def head_verdict(head: bytes, limits: ConnectionLimits) -> tuple[int, str] | None:
    """(0, "") once the head is complete, an error (status, message), or None for "wait".

    Only the size limits are checked here; the parser validates the rest in
    its thread (and answers 400/431 through ``handle_error``).
    """
    line_end = head.find(b"\r\n", 2 if head.startswith(b"\r\n") else 0)
    line_length = line_end if line_end >= 0 else len(head)
    if line_length > limits.max_request_line + 2:
        return 414, f"request line longer than {limits.max_request_line} bytes"
    end = head.find(b"\r\n\r\n")
    if 0 <= end <= limits.max_head_bytes:
        return 0, ""
    if end > limits.max_head_bytes or len(head) > limits.max_head_bytes:
        return 431, f"request head larger than {limits.max_head_bytes} bytes"
    return None


def buffered_length(head: bytes, limits: ConnectionLimits) -> int:
    """How many bytes of a request with a complete head the poller gathers before a thread.

    A small body of declared length is gathered too, so a client trickling it
    holds no thread. Anything else (no body, chunked, ``Expect: 100-continue``,
    over the limit, malformed) goes to a thread with the head alone: the app
    refuses a body that is too large before reading it, the parser a bad one.
    """
    end = head.find(b"\r\n\r\n") + 4
    fields = head[:end].lower()
    if b"\ntransfer-encoding:" in fields or b"\nexpect:" in fields:
        return end
    lengths = [line.split(b":", 1)[1].strip() for line in fields.split(b"\r\n")
               if line.startswith(b"content-length:")]
    if len(lengths) != 1 or not lengths[0].isdigit():
        return end
    declared = int(lengths[0])
    return end + declared if declared <= limits.max_body_bytes else end


def is_probe(head: bytes) -> bool:
    """A bodiless GET/HEAD of a probe path: served on the probe threads.

    A request with a body (``Content-Length``/``Transfer-Encoding``) goes to
    the user threads, so a client trickling a body can't hold a probe thread.
    """
    line, _, rest = bytes(head).lstrip(b"\r\n").partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
        return False
    path = parts[1].split(b"?", 1)[0]
    if path.decode("latin-1") not in PROBE_PATHS:
        return False
    headers = rest.split(b"\r\n\r\n", 1)[0].lower()
    return b"content-length:" not in headers and b"transfer-encoding:" not in headers


def json_error_response(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 answer in the API's error format, closing the connection."""
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


def parse_error_status(exc: BaseException) -> tuple[int, str]:
    """gunicorn's status for a request it could not parse (its ``handle_error``), as JSON text."""
    if isinstance(exc, http_errors.LimitRequestLine):
        return 414, f"request line too long: {exc}"
    if isinstance(exc, http_errors.LimitRequestHeaders):
        return 431, f"request header fields too large: {exc}"
    if isinstance(exc, http_errors.UnsupportedTransferCoding):
        return 501, str(exc)
    if isinstance(exc, http_errors.ExpectationFailed):
        return 417, str(exc)
    if isinstance(exc, http_errors.ParseException):
        return 400, str(exc)
    return 500, "internal error"


def _declared_length(req: Any) -> int:
    """The request's Content-Length, 0 if none or unreadable (the parser checked it)."""
    for name, value in req.headers:
        if name == "CONTENT-LENGTH":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


class GuardedThreadWorker(ThreadWorker):
    """gthread with heads read in the poller, bounded waiting, and probes on their own threads."""

    def __init__(self, *args: Any, limits: ConnectionLimits | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits or ConnectionLimits()
        self.probe_pool: futures.ThreadPoolExecutor | None = None
        #: insertion order = age: the first entry is the one to evict
        self.waiting: OrderedDict[WaitingConn, None] = OrderedDict()
        #: requests handed to a pool and not finished, by "is a probe"
        self.queued = {False: 0, True: 0}
        #: once stopping: when every waiting connection is closed
        self.stop_deadline: float | None = None
        #: called on every turn of the poller loop: tells the supervisor it is not wedged
        self.heartbeat: Callable[[], None] | None = None

    def init_process(self) -> None:
        self.probe_pool = futures.ThreadPoolExecutor(
            max_workers=PROBE_THREADS, thread_name_prefix="kidecar-probe")
        super().init_process()

    # -- the poller's side -----------------------------------------------------------
    def accept(self, listener: socket.socket) -> None:
        """Accept one connection and start reading its head (no thread yet)."""
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = WaitingConn(self.cfg, client_sock, client_addr, listener.getsockname())
        self._wait_for_head(conn, b"", self.limits.header_timeout)

    def _wait_for_head(self, conn: WaitingConn, buffered: bytes, seconds: float) -> None:
        conn.sock.setblocking(False)
        conn.head = bytearray(buffered)
        conn.awaiting_body = False
        # pipelined bytes already started the next head: it gets the head deadline
        conn.timeout = time.monotonic() + (self.limits.header_timeout if buffered else seconds)
        self.waiting[conn] = None
        if buffered and self._head_progress(conn):
            return
        self.poller.register(conn.sock, selectors.EVENT_READ,
                             partial(self._on_head_readable, conn))
        self._evict_beyond_limit()

    def _evict_beyond_limit(self) -> None:
        """Close the oldest waiting connections beyond ``maxConnections``."""
        while len(self.waiting) > self.limits.max_connections:
            oldest = next(iter(self.waiting))
            self._close_waiting(oldest)

    def _receive(self, conn: WaitingConn) -> bytes | None:
        """What arrived on ``conn``, or None: nothing yet, or the peer closed (then so
        do we: an error or EOF on a waiting connection ends it)."""
        try:
            data = conn.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            data = b""
        if not data:
            self._close_waiting(conn)
            return None
        return data

    def _on_head_readable(self, conn: WaitingConn, _sock: Any) -> None:
        data = self._receive(conn)
        if data is None:
            return
        if not conn.head:  # the first byte of a request on a kept-alive connection
            conn.timeout = time.monotonic() + self.limits.header_timeout
        conn.head += data
        self._head_progress(conn)

    def _head_progress(self, conn: WaitingConn) -> bool:
        """Dispatch or refuse ``conn`` if its head says so; True if it left the wait."""
        verdict = head_verdict(bytes(conn.head), self.limits)
        if verdict is None:
            return False
        status, message = verdict
        if not status and len(conn.head) < buffered_length(bytes(conn.head), self.limits):
            if not conn.awaiting_body:  # the body gets its own deadline from here
                conn.awaiting_body = True
                conn.timeout = time.monotonic() + self.limits.body_timeout
            return False
        self._stop_waiting(conn)
        if status:
            self._refuse(conn, status, message)
        else:
            self._dispatch(conn)
        return True

    def _stop_waiting(self, conn: WaitingConn) -> None:
        self.waiting.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _close_waiting(self, conn: WaitingConn) -> None:
        self._stop_waiting(conn)
        self.nr_conns -= 1
        conn.close()

    def _refuse(self, conn: WaitingConn, status: int, message: str) -> None:
        """Answer from the poller (no thread), then linger so the client reads it."""
        try:
            conn.sock.send(json_error_response(status, message))
        except OSError:
            pass
        self._linger(conn)

    def _linger(self, conn: WaitingConn) -> None:
        """Half-close and drain for a moment: closing with unread input would send RST."""
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.nr_conns -= 1
            conn.close()
            return
        conn.lingering = True
        conn.head = bytearray()
        conn.timeout = time.monotonic() + LINGER_SECONDS
        self.waiting[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_linger, conn))
        self._evict_beyond_limit()

    def _on_linger(self, conn: WaitingConn, _sock: Any) -> None:
        self._receive(conn)  # what a lingering client still sends is dropped

    def _dispatch(self, conn: WaitingConn) -> None:
        """Hand a connection whose head is complete to a thread (probe or user)."""
        head = bytes(conn.head)
        conn.head = bytearray()
        conn.probe = is_probe(head)
        capacity = (PROBE_THREADS if conn.probe else self.cfg.threads) + self.limits.max_queued
        if self.queued[conn.probe] >= capacity:
            self._refuse(conn, 503, "too many requests in progress; retry later")
            return
        conn.initialized = True
        conn.parser = RequestParser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader = DeadlineUnreader(conn.sock, self.limits.body_timeout)
        conn.parser.unreader.unread(head)
        pool = self.probe_pool if conn.probe else self.tpool
        assert pool is not None
        self.queued[conn.probe] += 1
        future = pool.submit(self.handle, conn)
        future.add_done_callback(
            lambda fut: self.method_queue.defer(self.finish_request, conn, fut))

    def finish_request(self, conn: WaitingConn, fs: futures.Future[Any]) -> None:
        """Back on the poller: wait for the next head, or close (lingering)."""
        self.queued[conn.probe] -= 1
        try:
            keep = bool(fs.result()) if not fs.cancelled() else False
        except Exception:  # noqa: BLE001 - a failed request closes its connection, nothing more
            keep = False
        if keep and self.alive:
            leftover = conn.parser.unreader.take_buffered()
            self._wait_for_head(conn, leftover, self.limits.keepalive)
        else:
            self._linger(conn)

    def notify(self) -> None:
        """gunicorn calls this on every turn of the poller loop (at least once a second):
        with no arbiter above us, the beat goes to the supervisor (http_child)."""
        super().notify()
        if self.heartbeat is not None:
            self.heartbeat()

    def murder_pending(self) -> None:
        """Close waiting connections past their deadline; once stopping, all after a moment.

        Like gunicorn's own stop, a connection gets STOP_KEEPALIVE_LINGER seconds
        for a request already on its way (answered with ``Connection: close``),
        no more: half-open clients must not use up the graceful timeout.
        """
        now = time.monotonic()
        if not self.alive and self.stop_deadline is None:
            self.stop_deadline = now + STOP_KEEPALIVE_LINGER
        for conn in list(self.waiting):
            if (self.stop_deadline is not None and now >= self.stop_deadline
                    and not conn.lingering):
                self._close_waiting(conn)
            elif now < conn.timeout:
                continue
            elif conn.head and not conn.lingering:
                self._stop_waiting(conn)
                part, seconds = (("body", self.limits.body_timeout) if conn.awaiting_body
                                 else ("head", self.limits.header_timeout))
                self._refuse(conn, 408, f"request {part} not received within {seconds:g}s")
            else:
                self._close_waiting(conn)

    def murder_keepalived(self, force: bool = False) -> None:
        """gunicorn keeps no connections of its own here; at the end close every waiting one."""
        if force:
            for conn in list(self.waiting):
                self._close_waiting(conn)

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.probe_pool is not None:
                self.probe_pool.shutdown(wait=False)

    # -- the threads' side -------------------------------------------------------------
    def handle(self, conn: WaitingConn) -> bool:
        """Serve one request whose head is buffered; True to keep the connection."""
        req = None
        # every blocking write is bounded too: a client that never reads can't hold a thread
        conn.sock.settimeout(self.limits.body_timeout)
        try:
            req = next(conn.parser)
            if _declared_length(req) > self.limits.max_body_bytes:
                req.force_close()
            keep = self.handle_request(req, conn)
        except RequestReadTimeout as exc:
            self._answer(conn, 408, str(exc))
        except (http_errors.NoMoreData, StopIteration):
            pass
        except OSError as exc:
            if exc.errno not in (None, errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
        except Exception as exc:  # noqa: BLE001 - every other failure is answered, not raised
            self.handle_error(req, conn.sock, conn.client, exc)
        else:
            return self._body_drained(conn, keep)
        return False

    def _body_drained(self, conn: WaitingConn, keep: bool) -> bool:
        """Keep the connection only if the unread rest of the body came in time (answer sent)."""
        try:
            return bool(self._keepalive_after(conn, keep))
        except (RequestReadTimeout, http_errors.NoMoreData, OSError, http_errors.ParseException):
            return False

    def _answer(self, conn: WaitingConn, status: int, message: str) -> None:
        try:
            conn.sock.sendall(json_error_response(status, message))
        except OSError:
            pass

    def handle_error(self, req: Any, client: socket.socket, addr: Any,
                     exc: BaseException) -> None:
        """gunicorn's answer to an unparsable request, in JSON (it would send HTML)."""
        status, message = parse_error_status(exc)
        if status == 500:
            self.log.exception("Error handling request")
        else:
            peer = addr[0] if isinstance(addr, tuple) and addr else addr
            self.log.warning("Invalid request from ip=%s: %s", peer, exc)
        try:
            client.sendall(json_error_response(status, message))
        except OSError:
            self.log.debug("Failed to send error message.")

