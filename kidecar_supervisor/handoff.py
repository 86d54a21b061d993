"""Zero-downtime self-upgrade: hand the listening socket to a newer kidecar.

OpenKruise SidecarSet ``HotUpgrade`` runs two containers; ``SIDECARSET_VERSION``
and ``SIDECARSET_VERSION_ALT`` say which is newer. The serving instance listens
on a Unix socket in a directory both containers share (default ``/dev/shm``).
A newer instance connects and the two speak, one JSON line each:

    new → old   HELLO {version}
    old → new   HELLO {version}             (old refuses if it is not older)
    new → old   GIVE
    old → new   FDS  + the listening fd (SCM_RIGHTS)
    new → old   READY                        (only once the new HTTP workers serve)

The old one stops accepting only on READY; if the new one dies before that, the
connection closes and the old one simply keeps serving. Both serve one shared
accept queue (the same socket), so no connection waiting in the backlog is lost.

Only the socket is handed over, no plugin state: both containers share the
state dir and the result store (the pod's volumes), so the newer instance's
plugins restore what the older one applied (e.g. hot_update's version) from
those, exactly as after a container restart.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("kidecar.handoff")

DEFAULT_HANDOFF_DIR = "/dev/shm"
#: how long a newer instance waits for the older one to answer
ASK_TIMEOUT = 10.0
#: how long the older one waits for READY after giving its fds
READY_TIMEOUT = 180.0


class HandoffRefused(Exception):
    """The peer is not older than us: never steal its socket."""


@dataclass(frozen=True)
class HandoffSettings:
    version: int
    alt: int
    directory: Path
    port: int

    @classmethod
    def from_env(cls, port: int) -> HandoffSettings | None:
        raw = os.environ.get("SIDECARSET_VERSION", "").strip()
        if not raw:
            return None
        try:
            version = int(raw)
            alt = int(os.environ.get("SIDECARSET_VERSION_ALT", "0").strip() or 0)
        except ValueError:
            log.warning("SIDECARSET_VERSION=%r / _ALT are not integers: hot upgrade disabled", raw)
            return None
        directory = Path(os.environ.get("KIDECAR_HANDOFF_DIR") or DEFAULT_HANDOFF_DIR)
        return cls(version=version, alt=alt, directory=directory, port=port)

    @property
    def socket_path(self) -> str:
        return str(self.directory / f"kidecar-handoff-{self.port}.sock")


@dataclass
class Takeover:
    """What a newer instance received: the listening socket."""

    listener: socket.socket
    peer_version: int
    channel: socket.socket

    def send_ready(self) -> None:
        """Tell the old instance we serve; it stops accepting and goes idle."""
        try:
            _send(self.channel, {"op": "READY"})
        except OSError as exc:
            log.warning("could not tell the older instance we are ready: %s", exc)
        finally:
            self.channel.close()


def ask_older_instance(settings: HandoffSettings) -> Takeover | None:
    """As a starting instance: take the socket from an older one, if one serves.

    None: nobody answers (bind normally). HandoffRefused: a newer one serves.
    """
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    channel.settimeout(ASK_TIMEOUT)
    try:
        channel.connect(settings.socket_path)
    except OSError:
        channel.close()
        return None
    try:
        _send(channel, {"op": "HELLO", "version": settings.version})
        hello, _ = _recv(channel)
        peer = int(hello.get("version", 0))
        if hello.get("op") != "HELLO" or peer >= settings.version:
            raise HandoffRefused(f"the instance serving now has version {peer}, "
                                 f"not older than ours ({settings.version})")
        _send(channel, {"op": "GIVE"})
        message, fds = _recv(channel, want_fds=True)
        if message.get("op") != "FDS" or not fds:
            raise OSError(f"older instance answered {message.get('op')!r} without a socket")
        listener = socket.socket(fileno=fds[0])
        listener.set_inheritable(True)
        channel.settimeout(None)
        return Takeover(listener, peer, channel)
    except (OSError, ValueError) as exc:
        channel.close()
        log.warning("older instance at %s did not hand over (%s): binding normally",
                    settings.socket_path, exc)
        return None
    except HandoffRefused:
        channel.close()
        raise


class HandoffServer:
    """As the serving instance: give the socket to a newer instance on request.

    ``on_ready()`` runs when the newer one serves; it is called from this
    server's thread and must hand work to the main loop itself.
    """

    def __init__(self, settings: HandoffSettings, listener: socket.socket,
                 on_ready: Callable[[int], None]) -> None:
        self.settings = settings
        self._listener_fd = listener.fileno()
        self._on_ready = on_ready
        self._busy = threading.Lock()
        settings.directory.mkdir(parents=True, exist_ok=True)
        path = settings.socket_path
        if os.path.exists(path):
            os.unlink(path)
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            self._server.bind(path)
        finally:
            os.umask(old_umask)
        self._server.listen(4)
        self._closed = False
        threading.Thread(target=self._accept_loop, name="handoff", daemon=True).start()
        log.info("hot upgrade: version %d serving; newer instances ask at %s",
                 settings.version, path)

    def close(self) -> None:
        self._closed = True
        try:
            self._server.close()
        except OSError:
            pass

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                channel, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(channel,), daemon=True).start()

    def _serve(self, channel: socket.socket) -> None:
        if not self._busy.acquire(blocking=False):
            channel.close()  # one handoff at a time
            return
        try:
            self._handshake(channel)
        except (OSError, ValueError) as exc:
            log.warning("hot upgrade aborted, still serving: %s", exc)
        finally:
            channel.close()
            self._busy.release()

    def _handshake(self, channel: socket.socket) -> None:
        channel.settimeout(ASK_TIMEOUT)
        hello, _ = _recv(channel)
        peer = int(hello.get("version", 0))
        _send(channel, {"op": "HELLO", "version": self.settings.version})
        if peer <= self.settings.version:
            log.info("an instance with version %d asked for the socket: refused (we are %d)",
                     peer, self.settings.version)
            return
        give, _ = _recv(channel)
        if give.get("op") != "GIVE":
            raise ValueError(f"expected GIVE, got {give.get('op')!r}")
        socket.send_fds(channel, [_encode({"op": "FDS"})],
                        [self._listener_fd])
        log.info("hot upgrade: gave the listening socket to version %d; serving until it is "
                 "ready", peer)
        channel.settimeout(READY_TIMEOUT)
        ready, _ = _recv(channel)
        if ready.get("op") != "READY":
            raise ValueError(f"version {peer} went away before it was ready")
        log.info("hot upgrade: version %d serves; stopping to accept and going idle", peer)
        self.close()
        self._on_ready(peer)


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def _send(channel: socket.socket, message: dict[str, Any]) -> None:
    channel.sendall(_encode(message))


def _recv(channel: socket.socket, want_fds: bool = False) -> tuple[dict[str, Any], list[int]]:
    """One JSON line (and any fds that came with it)."""
    data = b""
    fds: list[int] = []
    while not data.endswith(b"\n"):
        if want_fds:
            chunk, got, _, _ = socket.recv_fds(channel, 65536, 4)
            fds.extend(got)
        else:
            chunk = channel.recv(65536)
        if not chunk:
            raise ValueError("peer closed the connection")
        data += chunk
        if len(data) > 1 << 20:
            raise ValueError("handoff message too large")
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError("malformed handoff message")
    return message, fds
