"""Local control channel between HTTP workers / the CLI and the supervisor.

A ``multiprocessing.connection`` Listener on a Unix socket with an authkey
(file mode 0600 in the state dir). Each request is answered by the
supervisor's main loop, not by the thread that received it, so an answer
proves the main loop is alive: that is what ``/healthz`` relies on. The
messages are ``protocol.ControlRequest`` / ``ControlReply`` (``protocol.Op``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from multiprocessing.connection import (
    Client,
    Connection,
    Listener,
    answer_challenge,
    deliver_challenge,
)
from pathlib import Path
from typing import Any

from kidecar_supervisor.protocol import DEFAULT_TIMEOUT, ControlRequest, fail

log = logging.getLogger("kidecar.control")

#: Linux's limit on a Unix socket path (sun_path) is 108 bytes
_MAX_SOCKET_PATH = 100
#: a client must finish the authkey handshake within this many seconds
_AUTH_TIMEOUT = 5.0


class ControlError(Exception):
    """The supervisor could not be reached or did not answer in time."""


def _instance_suffix() -> str:
    """Two kidecar containers (SidecarSet hot upgrade) may share a state dir: keep apart."""
    version = os.environ.get("SIDECARSET_VERSION", "").strip()
    return f"-v{version}" if version.isdigit() else ""


def control_socket_path(state_dir: Path) -> str:
    path = str(state_dir / f"control{_instance_suffix()}.sock")
    if len(path) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]
    return f"/tmp/kidecar-{digest}.sock"


def create_authkey(state_dir: Path) -> bytes:
    """A fresh random key, readable by this user only (the CLI reads it too)."""
    key = secrets.token_bytes(32)
    path = state_dir / f"control{_instance_suffix()}.key"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        # O_CREAT's mode does not apply to a leftover temp file: set it on what we hold
        os.fchmod(handle.fileno(), 0o600)
        handle.write(key)
    os.replace(tmp, path)
    return key


def read_authkey(state_dir: Path) -> bytes:
    return (state_dir / f"control{_instance_suffix()}.key").read_bytes()


class ControlServer:
    """Accepts connections; each request is handed to ``dispatch`` and answered.

    ``dispatch(request, timeout)`` blocks until the main loop has answered (or
    raises ControlError on timeout) and returns the reply dict.
    """

    def __init__(self, address: str, authkey: bytes,
                 dispatch: Callable[[ControlRequest], dict[str, Any]]) -> None:
        if os.path.exists(address):
            os.unlink(address)
        self.address = address
        self._dispatch = dispatch
        self._authkey = authkey
        old_umask = os.umask(0o177)
        try:
            # authentication happens per connection thread (see _authenticate), so a
            # client that connects and stalls cannot block everybody else's accept
            self._listener = Listener(address, family="AF_UNIX", backlog=64)
        finally:
            os.umask(old_umask)
        os.chmod(address, 0o600)  # connect(2) needs write permission: the sidecar's user only
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="control-accept", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        try:
            self._listener.close()
        except OSError:
            pass

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn = self._listener.accept()
            except OSError:
                if self._closed:
                    return
                continue
            threading.Thread(target=self._serve, args=(conn,), name="control-conn",
                             daemon=True).start()

    def _authenticate(self, conn: Connection) -> bool:
        # shutdown() (unlike close) wakes a read blocked in this thread
        watchdog = threading.Timer(_AUTH_TIMEOUT, _shutdown_fd, args=(conn.fileno(),))
        watchdog.start()
        try:
            deliver_challenge(conn, self._authkey)
            answer_challenge(conn, self._authkey)
            return True
        except Exception as exc:  # noqa: BLE001 - a bad client must not kill the channel
            log.warning("control channel: refused a client: %s", exc or type(exc).__name__)
            conn.close()
            return False
        finally:
            watchdog.cancel()

    def _serve(self, conn: Connection) -> None:
        if not self._authenticate(conn):
            return
        try:
            while True:
                try:
                    request = conn.recv()
                except (EOFError, OSError):
                    return
                if not isinstance(request, dict):
                    conn.send(fail(400, "malformed control request"))
                    continue
                try:
                    reply = self._dispatch(request)  # type: ignore[arg-type] # checked: a dict
                except ControlError as exc:
                    reply = fail(503, str(exc))
                conn.send(reply)
        except (OSError, EOFError):
            return
        finally:
            conn.close()


def _shutdown_fd(fd: int) -> None:
    try:
        socket.socket(fileno=os.dup(fd)).shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class ControlClient:
    """Thread-safe client: one connection per thread, reconnecting as needed."""

    def __init__(self, address: str, authkey: bytes) -> None:
        self.address = address
        self._authkey = authkey
        self._local = threading.local()

    def request(self, message: ControlRequest | dict[str, Any],
                timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Send ``message`` (``protocol.request(Op.X, ...)``) and wait up to ``timeout``
        seconds for the reply."""
        message = {**message, "timeout": timeout}
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.send(message)
                if not conn.poll(timeout):
                    self._drop()
                    raise ControlError(f"supervisor did not answer within {timeout:g}s")
                reply: dict[str, Any] = conn.recv()
                return reply
            except (EOFError, OSError, BrokenPipeError) as exc:
                self._drop()
                if attempt == 2:
                    raise ControlError(f"supervisor unreachable at {self.address}: {exc}") from exc
        raise AssertionError("unreachable")

    def _connection(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = Client(self.address, family="AF_UNIX", authkey=self._authkey)
            except (OSError, EOFError) as exc:
                raise ControlError(f"supervisor unreachable at {self.address}: {exc}") from exc
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass
