"""The listening socket across a SidecarSet hot upgrade, seen from one instance.

At start: take the socket from an older kidecar (``handoff.ask_older_instance``),
or bind it; serve handoffs to newer instances. Once this instance boots with a
taken-over socket and its HTTP worker serves, ``finish_takeover`` tells the
older one to stop accepting. When a newer instance took our socket and
serves, the supervisor drains (stops its children) and ``release`` closes our
copy of the socket — never ``shutdown()``, the newer instance uses it.

Only the socket moves. No plugin state travels with it: both containers share
the state dir and the result store, and the newer instance's plugins restore
from those as after any restart.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

from kidecar_supervisor.handoff import (
    HandoffRefused,
    HandoffServer,
    HandoffSettings,
    Takeover,
    ask_older_instance,
)
from kidecar_supervisor.states import Mode

log = logging.getLogger("kidecar.upgrade")

#: a starting instance asks an older one that holds the port this long
HANDOFF_RETRY_SECONDS = 30.0
LISTEN_BACKLOG = 2048


class HotUpgrade:
    def __init__(self, host: str, port: int, on_handed_over: Callable[[int], None]) -> None:
        self.host = host
        self.port = port
        self.settings = HandoffSettings.from_env(port)
        self.listener: socket.socket | None = None
        self._takeover: Takeover | None = None
        self._server: HandoffServer | None = None
        #: runs in the handoff thread when a newer instance serves our socket
        self._on_handed_over = on_handed_over

    @property
    def version(self) -> int | None:
        return self.settings.version if self.settings else None

    @property
    def took_over(self) -> bool:
        """We serve an older instance's socket and have not told it we are ready."""
        return self._takeover is not None

    def obtain_listener(self, empty: bool) -> tuple[Mode, str]:
        """Take the socket from an older kidecar, or bind it; (mode, why idle)."""
        if empty:
            return Mode.IDLE, "started empty (--empty): waiting, serving nothing"
        settings = self.settings
        if settings is not None:
            try:
                self._takeover = self._ask_until_port_free(settings)
            except HandoffRefused as exc:
                return Mode.IDLE, f"hot upgrade: {exc}; staying idle"
        if self._takeover is not None:
            self.listener = self._takeover.listener
            log.info("hot upgrade: took the listening socket from version %d",
                     self._takeover.peer_version)
            return Mode.SERVING, ""
        if settings is not None:
            log.info("hot upgrade: no older instance answered at %s; binding port %d",
                     settings.socket_path, self.port)
        self.listener = self._bind()
        self.serve_handoffs()
        return Mode.SERVING, ""

    def _ask_until_port_free(self, settings: HandoffSettings) -> Takeover | None:
        """Ask the older instance; if it did not hand over but still holds the port
        (busy with another handoff, a hiccup), ask again for a while rather than
        failing to bind and crash-looping the container."""
        deadline = time.monotonic() + HANDOFF_RETRY_SECONDS
        while True:
            takeover = ask_older_instance(settings)
            if takeover is not None or not self._port_taken():
                return takeover
            if time.monotonic() > deadline:
                return None  # binding will fail with a clear error
            log.warning("hot upgrade: port %d is in use but nobody handed it over; asking "
                        "again", self.port)
            time.sleep(1.0)

    def _port_taken(self) -> bool:
        try:
            self._bind().close()
        except OSError:
            return True
        return False

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(LISTEN_BACKLOG)
        sock.set_inheritable(True)
        return sock

    def serve_handoffs(self) -> None:
        if self.settings is None or self.listener is None:
            return
        self._server = HandoffServer(self.settings, self.listener, self._on_handed_over)

    def finish_takeover(self) -> None:
        """Our plugins run and our HTTP worker serves: the older instance may stop."""
        if self._takeover is None:
            return
        self._takeover.send_ready()
        self._takeover = None
        log.info("hot upgrade: serving; told the older instance to stop accepting")
        self.serve_handoffs()

    def release(self) -> None:
        """Drained: close our copy of the socket (close, never shutdown())."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.release()
