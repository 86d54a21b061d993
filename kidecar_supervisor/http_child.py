"""The HTTP child: what it runs once forked, how long it may take to stop, and a
restart that never leaves the port unanswered.

The HTTP child is one gunicorn worker (``http_server.serve_http``) accepting on
the listening socket the supervisor owns. ``POST /plugins/http/restart`` does
what the SidecarSet hot upgrade does between two containers: a new HTTP child
starts on the same socket (one shared accept queue), and only once it reports
serving is the old one stopped, gracefully, so its requests in flight are
answered and no connection waits for nobody. A new child that dies before it
serves is dropped; the old one never stopped.

Hang detection (the arbiter's job before it went): the worker's poller loop
turns at least once a second, and each turn (``notify``) records a pulse. The
store's runtime sends a heartbeat every ``HEARTBEAT_INTERVAL``, but while HTTP
serves only if the poller pulsed within ``PULSE_LIMIT_SECONDS``. A worker that
serves but sends no beat for
``HEARTBEAT_TIMEOUT_SECONDS`` (a deadlock, a stopped process, a poller stuck in
a call) is killed by the supervisor and started again on the same socket,
long before the kubelet's liveness probe would restart the whole container.

The store (``StorageService``, every ResultStore) runs inside the HTTP child on
a thread of its own (``store_thread.py``, issue 16): the router's ``storage``
calls go to the HTTP child that serves. Its life therefore has two halves.
It starts its store first and serves HTTP once the store runs (under a
hot-upgrade takeover, only once the supervisor says ``serve``: the plugins run
by then). SIGTERM stops its HTTP worker gracefully; the store goes on taking
the plugins' last results until the supervisor sends it ``stop``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from kidecar_supervisor.child import Child, ChildOps
from kidecar_supervisor.config import HttpSettings, RestartSettings, SidecarConfig
from kidecar_supervisor.control_channel import ControlClient, ControlError
from kidecar_supervisor.plugin_runtime import PluginRuntime
from kidecar_supervisor.protocol import Op, request
from kidecar_supervisor.protocol import serve as serve_message
from kidecar_supervisor.states import ChildKind
from kidecar_supervisor.store_thread import StoreThread

log = logging.getLogger("kidecar.http")

#: the child beats this often; the supervisor kills a serving one silent this long
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TIMEOUT_SECONDS = 6.0
#: a serving child beats only if its poller turned within this (it turns every second)
PULSE_LIMIT_SECONDS = 3.0
#: HTTP (with the store) is part of kidecar itself: it restarts forever, quickly
HTTP_RESTART = RestartSettings(policy="Always", backoff_seconds=0.2, max_backoff_seconds=5.0,
                               max_restarts=1_000_000,
                               heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_SECONDS)
NAME = "http"

#: builds the store's runtime on the child's pipe: (conn, beat_while, on_serve)
StoreFactory = Callable[[Connection, Callable[[], bool], Callable[[], None]], PluginRuntime]


class PollerPulse:
    """When the HTTP worker's poller last turned; the store's heartbeat asks it."""

    def __init__(self) -> None:
        self._last = time.monotonic()
        self.serving = False

    def beat(self) -> None:
        self._last = time.monotonic()

    def alive(self) -> bool:
        """Not serving (starting, or stopped with the store finishing), or turning."""
        return not self.serving or time.monotonic() - self._last < PULSE_LIMIT_SECONDS


class HttpChild:
    def __init__(self, config: SidecarConfig, shutdown_grace: float,
                 listener: Callable[[], socket.socket | None]) -> None:
        self.config = config
        self.shutdown_grace = shutdown_grace
        self._listener = listener
        self._token = ""
        self._client: ControlClient | None = None
        #: a new HTTP child serves as soon as its store runs; False while a hot-upgrade
        #: takeover boots (``allow_serving`` sends ``serve`` once the plugins run)
        self.serve_at_once = True
        #: a new HTTP child started by a restart, not serving yet
        self.successor: Child | None = None
        #: HTTP children replaced by a newer one, finishing their requests
        self.retiring: list[Child] = []

    # -- the forked child ---------------------------------------------------------------
    def prepare(self, address: str, authkey: bytes, token: str) -> None:
        """The control client, built before forking; the Flask app is built in the child.

        Only the HTTP child uses flask, werkzeug, gunicorn and prometheus_client.
        Imported in the supervisor, their pages would be shared by all five
        processes, yet the HTTP child writes reference counts over most of them
        and copies those pages anyway: the tree's PSS is ~2 MiB lower with them
        imported in the child alone (issue 16, docs/footprint.md).
        """
        self._client = ControlClient(address, authkey)
        self._token = token

    def keep_fds(self) -> set[int]:
        listener = self._listener()
        return {listener.fileno()} if listener is not None else set()

    def body(self, conn: Connection, make_store: StoreFactory) -> int:
        """Runs in the forked HTTP child: the store, then HTTP until SIGTERM (graceful),
        then the store until the supervisor stops it."""
        from kidecar_supervisor.http_app import create_app
        from kidecar_supervisor.http_server import serve_http

        listener = self._listener()
        client = self._client
        assert listener is not None and client is not None
        pulse = PollerPulse()
        may_serve = threading.Event()
        if self.serve_at_once:
            may_serve.set()
        store = StoreThread(make_store(conn, pulse.alive, may_serve.set))
        stopping = threading.Event()

        def stop_before_serving(*_: Any) -> None:
            stopping.set()
            may_serve.set()

        signal.signal(signal.SIGTERM, stop_before_serving)  # gunicorn's own replaces it
        store.start()
        app = create_app(client, token=self._token)
        if not store.wait_started():
            return store.join()
        may_serve.wait()
        code = 0
        if not stopping.is_set() and store.alive:
            code = self._serve(serve_http, app, listener, client, pulse, stopping)
        pulse.serving = False
        if not stopping.is_set():
            # the worker ended unasked: a child that beats but serves nothing would wedge
            # the pod's API, so the store stops too and the supervisor starts both again
            log.error("the HTTP worker stopped without being asked to; stopping the store")
            store.runtime.request_stop()
            code = code or 1
        # HTTP has stopped; the store answers the plugins' last calls until told to stop
        return store.join() or code

    def _serve(self, serve_http: Callable[..., int], app: Any, listener: socket.socket,
               client: ControlClient, pulse: PollerPulse, stopping: threading.Event) -> int:
        def worker_ready(worker: Any) -> None:
            worker.heartbeat = pulse.beat
            pulse.beat()
            pulse.serving = True
            gunicorn_on_term = signal.getsignal(signal.SIGTERM)

            def on_term(signum: int, frame: Any) -> None:
                stopping.set()  # asked to stop: the store stays for the last results
                if callable(gunicorn_on_term):
                    gunicorn_on_term(signum, frame)

            signal.signal(signal.SIGTERM, on_term)
            signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn had it
            if stopping.is_set():  # SIGTERM came before gunicorn's handler: stop now
                os.kill(os.getpid(), signal.SIGTERM)
            try:
                client.request(request(Op.HTTP_SERVING, pid=os.getpid()), timeout=5.0)
            except ControlError as exc:
                log.warning("could not report the HTTP worker ready: %s", exc)

        return serve_http(app, listener.fileno(), self.settings(), self.config.log_level,
                          worker_ready)

    def settings(self) -> HttpSettings:
        """A stopping HTTP worker answers its in-flight requests for up to the shutdown
        grace: a plugin asked to stop answers its call within it (issue 17)."""
        http = self.config.http
        return replace(http, graceful_timeout_seconds=max(http.graceful_timeout_seconds,
                                                          self.shutdown_grace))

    def grace(self, child: Child, grace: float) -> float:
        """HTTP gets at least gunicorn's own graceful timeout to finish requests."""
        if child.kind == ChildKind.HTTP:
            return max(grace, self.settings().graceful_timeout_seconds + 1.0)
        return grace

    @staticmethod
    def new_child(ops: ChildOps) -> Child:
        return Child(NAME, ChildKind.HTTP, HTTP_RESTART, ops, internal=True, boot_order=-1)

    def allow_serving(self, children: list[Child], send: Callable[[Child, Any], bool]) -> None:
        """A takeover booted: the HTTP child may accept now, and any later one at once."""
        if self.serve_at_once:
            return
        self.serve_at_once = True
        for child in children + self.extra():
            if child.kind == ChildKind.HTTP and child.alive:
                send(child, serve_message())

    # -- restart without a gap ------------------------------------------------------------
    def extra(self) -> list[Child]:
        """HTTP children on their way in or out (not in the supervisor's list)."""
        return ([self.successor] if self.successor is not None else []) + self.retiring

    def restart(self, old: Child) -> None:
        if self.successor is not None:
            log.info("http: a restart is already under way")
            return
        successor = self.new_child(old.ops)
        successor.restarts = old.restarts + 1
        self.successor = successor
        log.info("http: restarting; the current worker serves until the new one does")
        successor.start()
        if not successor.alive:  # could not even fork: the old one serves on
            self.successor = None

    def serving(self, children: list[Child], pid: int) -> None:
        """An HTTP worker accepts now: the current one is ready, a successor takes over."""
        successor = self.successor
        if successor is not None and successor.pid == pid:
            successor.mark_serving()
            self._promote(children, successor)
            return
        current = next((c for c in children if c.kind == ChildKind.HTTP), None)
        if current is not None and pid in (0, current.pid):
            current.mark_serving()

    def _promote(self, children: list[Child], successor: Child) -> None:
        self.successor = None
        index = next(i for i, c in enumerate(children) if c.kind == ChildKind.HTTP)
        old = children[index]
        children[index] = successor
        if not old.alive:
            return
        self.retiring.append(old)
        log.info("http: the new worker (pid %d) serves; stopping the old one (pid %d)",
                 successor.pid, old.pid)
        old.disable(self.grace(old, old.restart.stop_grace_seconds))

    def exited(self, children: list[Child], child: Child, code: int,
               on_exit: Callable[[Child, int], None]) -> bool:
        """Handle an exit that belongs to a restart of HTTP; False for any other."""
        if child is self.successor:
            log.warning("http: the new worker exited before it served; the old one serves on")
            child.disable(0.0)
            on_exit(child, code)
            self.successor = None
            return True
        if child in self.retiring:
            on_exit(child, code)
            self.retiring.remove(child)
            return True
        if child.kind == ChildKind.HTTP and self.successor is not None:
            # the current one died while its successor starts: the successor takes over
            child.disable(0.0)
            on_exit(child, code)
            self._promote(children, self.successor)
            return True
        return False
