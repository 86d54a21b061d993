"""The parent process: owns every child, applies restart policies, routes messages.

One thread (the main loop) owns all state. It sleeps in ``select`` on: the
signal wake-up fd (SIGCHLD makes crash-to-restart immediate, no polling), each
plugin's pipe, each binary's output pipe and the control-request wake-up pipe;
timers (backoff, heartbeat deadlines, stop deadlines) bound the sleep. Control
requests arrive from channel threads through a queue and are answered here, so
an answer proves this loop is alive.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import queue
import select
import selectors
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from kidecar_supervisor import __version__
from kidecar_supervisor.children import (
    become_subreaper,
    fork_child,
    kill_descendants,
    reap_all,
    signal_group,
    spawn_program,
)
from kidecar_supervisor.config import PluginSpec, RestartSettings, SidecarConfig
from kidecar_supervisor.control_channel import (
    ControlError,
    ControlServer,
    control_socket_path,
    create_authkey,
)
from kidecar_supervisor.handoff import (
    HandoffRefused,
    HandoffServer,
    HandoffSettings,
    Takeover,
    ask_older_instance,
)
from kidecar_supervisor.pipe_frames import PipeFrameError, PipeFrames
from kidecar_supervisor.plugin_api import PodIdentity
from kidecar_supervisor.restart_policy import RestartTracker
from kidecar_supervisor.storage.base import StorageConfig
from kidecar_supervisor.storage.service import StorageService

log = logging.getLogger("kidecar.supervisor")

#: HTTP and storage are part of kidecar itself: they restart forever, quickly
_INTERNAL_RESTART = RestartSettings(policy="Always", backoff_seconds=0.2, max_backoff_seconds=5.0,
                                    max_restarts=1_000_000, heartbeat_timeout_seconds=60.0)
_BOOT_STEP_TIMEOUT = 30.0
#: a starting instance asks an older one that holds the port this long
_HANDOFF_RETRY_SECONDS = 30.0
#: calls to a child that is (re)starting wait for it, up to this many
_MAX_QUEUED_CALLS = 1000
#: a routed call nobody answered is forgotten after this long
_ROUTE_TTL = 3700.0
_OUTPUT_LINE_LIMIT = 16 * 1024


@dataclass
class RunOptions:
    state_dir: Path
    port: int
    host: str = "0.0.0.0"
    token: str = ""
    shutdown_grace_seconds: float = 25.0
    #: ``kidecar run --empty``: serve nothing, only wait (SidecarSet hotUpgradeEmptyImage)
    empty: bool = False


@dataclass
class Child:
    """Everything the supervisor knows about one child, across its restarts."""

    name: str
    kind: str  # "plugin" | "binary" | "http" | "storage"
    restart: RestartSettings
    spec: PluginSpec | None = None
    boot_order: int = 0
    internal: bool = False
    state: str = "Pending"
    pid: int = 0
    conn: Connection | None = None
    popen: Any = None
    output_fd: int = -1
    output_buffer: bytes = b""
    started_at: float = 0.0  # monotonic
    last_message_at: float = 0.0
    ready: bool = False
    restarts: int = 0
    last_error: str = ""
    last_exit: int | None = None
    version: str = ""
    infos: dict[str, Any] = field(default_factory=dict)
    wanted: bool = True
    next_start_at: float | None = None
    stop_deadline: float | None = None
    restart_after_stop: bool = False
    #: the error this run reported itself (an init failure), kept over its exit code
    run_error: str = ""
    #: bytes read from the child's pipe that do not make a whole message yet
    inbox: PipeFrames = field(default_factory=lambda: PipeFrames())
    #: calls that arrived while the child was (re)starting: (message, reply_to, deadline)
    queued_calls: list[tuple[dict[str, Any], tuple[Any, ...], float]] = field(
        default_factory=list)
    tracker: RestartTracker = field(init=False)

    def __post_init__(self) -> None:
        self.tracker = RestartTracker(self.restart)

    @property
    def alive(self) -> bool:
        return self.pid != 0

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "internal": self.internal,
            "state": self.state, "pid": self.pid or None, "ready": self.ready,
            "restarts": self.restarts, "uptime": round(now - self.started_at, 3)
            if self.alive and self.started_at else 0.0,
            "lastError": self.last_error or None, "lastExitCode": self.last_exit,
            "version": self.version, "restartPolicy": self.restart.policy,
            "bootOrder": self.boot_order, "infos": self.infos,
        }


@dataclass
class _ControlRequest:
    message: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None

    def answer(self, reply: dict[str, Any]) -> None:
        self.reply = reply
        self.done.set()


class Supervisor:
    def __init__(self, config: SidecarConfig, options: RunOptions) -> None:
        self.config = config
        self.options = options
        self.identity = PodIdentity(
            pod_name=os.environ.get("POD_NAME", ""),
            namespace=os.environ.get("POD_NAMESPACE", ""),
            node_name=os.environ.get("NODE_NAME", ""),
        )
        self.children = self._plan_children(config)
        self.started_at = time.monotonic()
        self.shutting_down = False
        self.exit_code = 0
        self._selector = selectors.DefaultSelector()
        self._requests: queue.SimpleQueue[_ControlRequest] = queue.SimpleQueue()
        self._ids = itertools.count(1)
        # routed calls in flight: our id -> (target name, reply-to, deadline)
        self._routes: dict[int, tuple[str, tuple[Any, ...], float]] = {}
        self._gauges: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
        self._boot_index = 0
        self._boot_step_since = 0.0
        self._listen_socket: socket.socket | None = None
        self._control: ControlServer | None = None
        #: "serving"; "draining" after handing the socket to a newer kidecar; then "idle"
        self.mode = "serving"
        self._handoff_settings = HandoffSettings.from_env(options.port)
        self._takeover: Takeover | None = None
        self._handoff_server: HandoffServer | None = None
        self._drain_deadline = 0.0

    # -- plan --------------------------------------------------------------------
    def _plan_children(self, config: SidecarConfig) -> list[Child]:
        """Boot order: storage, HTTP, then plugins by ascending bootOrder (stable)."""
        children = [
            Child("storage", "storage", _INTERNAL_RESTART, internal=True, boot_order=-2),
            Child("http", "http", _INTERNAL_RESTART, internal=True, boot_order=-1),
        ]
        specs = sorted((s for s in config.plugins if s.enabled), key=lambda s: s.boot_order)
        for spec in specs:
            kind = "binary" if spec.is_binary else "plugin"
            children.append(Child(spec.name, kind, spec.restart, spec=spec,
                                  boot_order=spec.boot_order))
        return children

    def child(self, name: str) -> Child | None:
        return next((c for c in self.children if c.name == name), None)

    # -- start-up ----------------------------------------------------------------
    def run(self) -> int:
        """Boot, serve until SIGTERM/SIGINT, stop everything; the process exit code."""
        self.options.state_dir.mkdir(parents=True, exist_ok=True)
        if become_subreaper():
            log.debug("child subreaper enabled")
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._signal_r, signal_w = socket.socketpair()
        self._signal_r.setblocking(False)
        signal_w.setblocking(False)
        self._signal_w = signal_w
        signal.set_wakeup_fd(signal_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: None)  # the wake-up fd carries the signal number
        self._selector.register(self._signal_r, selectors.EVENT_READ, ("signal", None))
        self._selector.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._obtain_listener()
        address = control_socket_path(self.options.state_dir)
        self._authkey = create_authkey(self.options.state_dir)
        self._control = ControlServer(address, self._authkey, self._submit)
        self._control.start()
        self._http_app = self._build_http_app(address)
        gc.collect()
        gc.freeze()  # forked children share these pages instead of copying them on GC
        log.info("kidecar %s starting (%s): %d plugin(s), HTTP on %s:%d, state in %s",
                 __version__, self.mode, len([c for c in self.children if not c.internal]),
                 self.options.host, self.options.port, self.options.state_dir)
        self._boot_step_since = time.monotonic()
        try:
            self._loop()
        finally:
            self._final_sweep()
        return self.exit_code

    def _obtain_listener(self) -> None:
        """Take the socket from an older kidecar (hot upgrade), or bind it ourselves."""
        settings = self._handoff_settings
        if self.options.empty:
            self._go_idle("started empty (--empty): waiting, serving nothing")
            return
        if settings is not None:
            try:
                self._takeover = self._ask_until_port_free(settings)
            except HandoffRefused as exc:
                self._go_idle(f"hot upgrade: {exc}; staying idle")
                return
        if self._takeover is not None:
            # both instances accept on the shared socket from now on: ours must not
            # answer before our plugins run, so HTTP boots last
            http = [c for c in self.children if c.kind == "http"]
            self.children = [c for c in self.children if c.kind != "http"] + http
            self._listen_socket = self._takeover.listener
            hot = self._takeover.state.get("hot_update") or {}
            log.info("hot upgrade: took the listening socket from version %d (its hot update: "
                     "%s)", self._takeover.peer_version, hot.get("version") or "none")
            return
        if settings is not None:
            log.info("hot upgrade: no older instance answered at %s; binding port %d",
                     settings.socket_path, self.options.port)
        self._listen_socket = self._bind()
        self._serve_handoffs()

    def _ask_until_port_free(self, settings: HandoffSettings) -> Takeover | None:
        """Ask the older instance; if it did not hand over but still holds the port
        (busy with another handoff, a hiccup), ask again for a while rather than
        failing to bind and crash-looping the container."""
        deadline = time.monotonic() + _HANDOFF_RETRY_SECONDS
        while True:
            takeover = ask_older_instance(settings)
            if takeover is not None or not self._port_taken():
                return takeover
            if time.monotonic() > deadline:
                return None  # binding will fail with a clear error
            log.warning("hot upgrade: port %d is in use but nobody handed it over; asking "
                        "again", self.options.port)
            time.sleep(1.0)

    def _port_taken(self) -> bool:
        try:
            self._bind().close()
        except OSError:
            return True
        return False

    def _serve_handoffs(self) -> None:
        if self._handoff_settings is None or self._listen_socket is None:
            return
        self._handoff_server = HandoffServer(
            self._handoff_settings, self._listen_socket, self._handoff_state, self._handed_over)

    def _handed_over(self, peer: int) -> None:
        """Called from the handoff thread: let the main loop drain."""
        self._submit({"op": "handed_over", "peer": peer, "timeout": 10.0})

    def _handoff_state(self) -> dict[str, Any]:
        """What a newer instance should know: the hot update applied here."""
        if self.config.plugin("hot_update") is None:
            return {}
        try:
            reply = self._submit({"op": "call", "target": "hot_update",
                                  "method": "hot_update_status", "params": {}, "timeout": 5.0})
        except ControlError:
            return {}
        result = reply.get("result") or {}
        return {"hot_update": {k: result.get(k) for k in ("version", "url", "file", "sha256")}}

    def _go_idle(self, reason: str) -> None:
        log.info("%s", reason)
        self.mode = "idle"
        self.children = []

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.options.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.options.host, self.options.port))
        sock.listen(2048)
        sock.set_inheritable(True)
        return sock

    # -- main loop -----------------------------------------------------------------
    def _loop(self) -> None:
        timeout = 0.0  # boot at once
        while True:
            # events first, timers after: after any stall, heartbeats already waiting
            # in the pipes are read before a plugin is judged hung
            for key, _ in self._selector.select(timeout):
                kind, child = key.data
                if kind == "signal":
                    self._on_signals()
                elif kind == "wake":
                    os.read(self._wake_r, 4096)
                elif kind == "pipe":
                    self._on_pipe(child)
                elif kind == "output":
                    self._on_output(child)
            self._reap()
            self._serve_control_requests()
            self._run_timers(time.monotonic())
            if self.shutting_down and not any(c.alive for c in self.children):
                return
            timeout = self._next_timer(time.monotonic())

    def _next_timer(self, now: float) -> float:
        deadlines = [now + 1.0]  # a floor tick: heartbeat checks need no exact timer
        for child in self.children:
            for when in (child.next_start_at, child.stop_deadline):
                if when is not None:
                    deadlines.append(when)
        return max(0.0, min(deadlines) - now)

    def _run_timers(self, now: float) -> None:
        self._expire_calls(now)
        for child in self.children:
            if child.next_start_at is not None and now >= child.next_start_at:
                child.next_start_at = None
                if child.wanted and not self.shutting_down:
                    self._start(child)
            if child.stop_deadline is not None and now >= child.stop_deadline and child.alive:
                log.warning("%s did not stop within its grace period: killing it",
                            child.name, extra={"plugin": child.name})
                signal_group(child.pid, signal.SIGKILL)
                child.stop_deadline = None
            self._check_heartbeat(child, now)
        if self.shutting_down:
            self._shutdown_step()
        elif self.mode == "draining":
            self._drain_step()
        elif self.mode == "serving":
            self._boot_next(now)
            self._finish_takeover()

    def _finish_takeover(self) -> None:
        """Tell the older instance to stop once our HTTP workers serve and plugins run."""
        if self._takeover is None or self._boot_index < len(self.children):
            return
        http = self.child("http")
        if http is None or not http.ready:
            return
        self._takeover.send_ready()
        self._takeover = None
        log.info("hot upgrade: serving; told the older instance to stop accepting")
        self._serve_handoffs()

    def _check_heartbeat(self, child: Child, now: float) -> None:
        if child.kind not in ("plugin", "storage") or not child.alive:
            return
        limit = child.restart.start_timeout_seconds
        if child.state == "Starting" and now - child.started_at > limit:
            self._kill_hung(child, f"init() did not finish within {limit:g}s")
            return
        if child.state != "Running":
            return
        silent = now - child.last_message_at
        if silent > child.restart.heartbeat_timeout_seconds:
            self._kill_hung(child, f"no heartbeat for {silent:.1f}s")

    # -- boot order ------------------------------------------------------------------
    def _boot_next(self, now: float) -> None:
        """Start children one at a time: the next only once the previous has started."""
        while self._boot_index < len(self.children):
            current = self.children[self._boot_index]
            if current.state == "Pending":
                self._start(current)
                self._boot_step_since = now
            settled = current.state not in ("Starting",) or current.kind in ("binary", "http")
            if not settled and now - self._boot_step_since < _BOOT_STEP_TIMEOUT:
                return
            if not settled:
                log.warning("%s is still starting after %.0fs; starting the next plugin",
                            current.name, _BOOT_STEP_TIMEOUT)
            self._boot_index += 1

    # -- starting a child ------------------------------------------------------------
    def _start(self, child: Child) -> None:
        child.ready = False
        child.infos = {}
        child.last_exit = None
        child.run_error = ""
        try:
            if child.kind == "binary":
                self._start_binary(child)
            else:
                self._start_forked(child)
        except OSError as exc:
            child.last_error = f"cannot start: {exc}"
            log.error("%s cannot start: %s", child.name, exc, extra={"plugin": child.name})
            self._after_exit(child, 127)
            return
        now = time.monotonic()
        child.started_at = now
        child.last_message_at = now
        child.state = "Running" if child.kind in ("binary", "http") else "Starting"
        # binaries are ready when running; HTTP once its worker serves (it tells us)
        child.ready = child.kind == "binary"
        log.info("started %s (pid %d)", child.name, child.pid, extra={"plugin": child.name})

    def _start_forked(self, child: Child) -> None:
        parent_end, child_end = Pipe(duplex=True)
        keep = {child_end.fileno()}
        if child.kind == "http":
            assert self._listen_socket is not None
            keep.add(self._listen_socket.fileno())
        try:
            pid = fork_child(lambda: self._child_body(child, child_end), keep)
        except OSError:
            parent_end.close()
            raise
        finally:
            child_end.close()
        child.pid = pid
        child.conn = parent_end
        child.inbox = PipeFrames()
        # reads are framed by us (never block on half a message); sends are checked first
        os.set_blocking(parent_end.fileno(), False)
        self._selector.register(parent_end, selectors.EVENT_READ, ("pipe", child))

    def _child_body(self, child: Child, conn: Connection) -> int:
        """Runs in the forked child: becomes the plugin, the HTTP server or storage."""
        from kidecar_supervisor.structured_log import set_role

        set_role(child.name)
        if child.kind == "http":
            return self._http_body()
        from kidecar_supervisor.plugin_runtime import run_plugin_process

        plugin_class, config = (StorageService, None) if child.kind == "storage" else (
            child.spec.plugin_class, child.spec.config)  # type: ignore[union-attr]
        interval = min(2.0, child.restart.heartbeat_timeout_seconds / 4)
        return run_plugin_process(plugin_class, child.name, config, conn, self.options.state_dir,
                                  self.identity, interval, child.restart.stop_grace_seconds)

    def _build_http_app(self, address: str) -> Any:
        """Built once, before forking: every HTTP child shares its pages."""
        from kidecar_supervisor.control_channel import ControlClient
        from kidecar_supervisor.http_app import create_app

        self._http_client = ControlClient(address, self._authkey)
        return create_app(self._http_client, token=self.options.token)

    def _http_body(self) -> int:
        from kidecar_supervisor.http_server import serve_http

        assert self._listen_socket is not None
        client = self._http_client

        def worker_ready(worker: Any) -> None:
            try:
                client.request({"op": "http_serving", "pid": os.getpid()}, timeout=5.0)
            except ControlError as exc:
                log.warning("could not report the HTTP worker ready: %s", exc)

        return serve_http(self._http_app, self._listen_socket.fileno(), self.config.http,
                          self.config.log_level, worker_ready)

    def _start_binary(self, child: Child) -> None:
        assert child.spec is not None
        cfg = child.spec.config
        popen = spawn_program(cfg.argv(), cfg.environment(), cfg.working_dir)
        child.popen = popen
        child.pid = popen.pid
        assert popen.stdout is not None
        child.output_fd = popen.stdout.fileno()
        os.set_blocking(child.output_fd, False)
        self._selector.register(child.output_fd, selectors.EVENT_READ, ("output", child))

    # -- messages from children ------------------------------------------------------
    def _on_pipe(self, child: Child) -> None:
        """Read what the child wrote, whole messages only: a child stopped half-way
        through a message cannot block the main loop."""
        conn = child.conn
        if conn is None:
            return
        while True:
            try:
                data = os.read(conn.fileno(), 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self._drain_inbox(child)
                self._close_pipe(child)
                return
            child.inbox.feed(data)
            if not self._drain_inbox(child):
                return

    def _drain_inbox(self, child: Child) -> bool:
        """Handle every complete message; False if the child broke the framing."""
        try:
            for message in child.inbox.messages():
                self._on_message(child, message)
        except PipeFrameError as exc:
            self._kill_hung(child, f"garbled pipe: {exc}")
            self._close_pipe(child)
            return False
        return child.conn is not None

    def _on_message(self, child: Child, message: dict[str, Any]) -> None:
        child.last_message_at = time.monotonic()
        kind = message.get("t")
        if kind == "hb":
            child.infos = message.get("status") or {}
            child.version = message.get("version", child.version)
        elif kind == "started" and child.state == "Starting":
            child.state = "Running"
            child.version = message.get("version", "")
            log.info("%s is running", child.name, extra={"plugin": child.name})
            self._flush_queued_calls(child)
        elif kind == "ready":
            child.ready = bool(message.get("ready"))
        elif kind == "error":
            child.run_error = child.last_error = str(message.get("error", ""))
        elif kind == "gauge":
            labels = tuple(sorted((message.get("labels") or {}).items()))
            self._gauges[(child.name, message["name"], labels)] = float(message["value"])
        elif kind == "call":
            self._route_call(child, message)
        elif kind == "reply":
            self._route_reply(message)

    def _route_call(self, source: Child, message: dict[str, Any]) -> None:
        target = self.child(str(message.get("target")))
        reply_to = ("child", source.name, message.get("id"), source.pid)
        self._forward(target, message, reply_to, time.monotonic() + 300.0)

    def _forward(self, target: Child | None, message: dict[str, Any],
                 reply_to: tuple[Any, ...], deadline: float) -> None:
        if target is None or target.kind not in ("plugin", "storage"):
            name = message.get("target")
            self._fail(reply_to, 404, f"plugin {name!r} is not configured")
            return
        if target.conn is not None and target.state == "Running":
            self._dispatch_call(target, message, reply_to, deadline)
            return
        if self._coming_back(target) and len(target.queued_calls) < _MAX_QUEUED_CALLS:
            # (re)starting: the call waits for it rather than failing (a result must
            # not be lost because the storage process is restarting)
            target.queued_calls.append((message, reply_to, deadline))
            return
        self._fail(reply_to, 503, f"plugin {target.name!r} is not running (state {target.state})")

    def _coming_back(self, child: Child) -> bool:
        if self.shutting_down or self.mode != "serving" or not child.wanted:
            return False
        return child.state in ("Pending", "Starting", "Backoff") or (
            child.state == "Stopping" and child.restart_after_stop)

    def _dispatch_call(self, target: Child, message: dict[str, Any], reply_to: tuple[Any, ...],
                       deadline: float) -> None:
        call_id = next(self._ids)
        self._routes[call_id] = (target.name, reply_to, deadline)
        if not self._send(target, {"t": "call", "id": call_id, "method": message.get("method"),
                                   "params": message.get("params") or {}}):
            self._routes.pop(call_id, None)
            self._fail(reply_to, 503, f"plugin {target.name!r} is not answering")

    def _flush_queued_calls(self, child: Child) -> None:
        queued, child.queued_calls = child.queued_calls, []
        for message, reply_to, deadline in queued:
            self._forward(child, message, reply_to, deadline)

    def _fail_queued_calls(self, child: Child, reason: str) -> None:
        queued, child.queued_calls = child.queued_calls, []
        for _, reply_to, _ in queued:
            self._fail(reply_to, 503, reason)

    def _expire_calls(self, now: float) -> None:
        for call_id, (name, reply_to, deadline) in list(self._routes.items()):
            if now > deadline:
                del self._routes[call_id]
                self._fail(reply_to, 504, f"plugin {name!r} did not answer in time")
        for child in self.children:
            if child.queued_calls and any(now > q[2] for q in child.queued_calls):
                keep = [q for q in child.queued_calls if now <= q[2]]
                for _, reply_to, _ in (q for q in child.queued_calls if now > q[2]):
                    self._fail(reply_to, 504, f"plugin {child.name!r} did not start in time")
                child.queued_calls = keep

    def _fail(self, reply_to: tuple[Any, ...], status: int, message: str) -> None:
        self._deliver(reply_to, {"ok": False, "error": {"status": status, "error": message}})

    def _route_reply(self, message: dict[str, Any]) -> None:
        route = self._routes.pop(message.get("id", -1), None)
        if route is not None:
            self._deliver(route[1], message)

    def _deliver(self, reply_to: tuple[Any, ...], reply: dict[str, Any]) -> None:
        kind, dest, their_id = reply_to[:3]
        if kind == "control":
            if reply.get("ok"):
                dest.answer({"ok": True, "result": reply.get("result")})
            else:
                error = dict(reply.get("error") or {})
                dest.answer({"ok": False, "status": error.pop("status", 500),
                             "error": error.pop("error", "failed"), **error})
        elif kind == "child":
            target = self.child(dest)
            # only to the very process that asked: a restarted one reuses call ids
            if target is not None and target.conn is not None and target.pid == reply_to[3]:
                self._send(target, {"t": "reply", "id": their_id, "ok": reply.get("ok"),
                                    "result": reply.get("result"), "error": reply.get("error")})

    def _fail_routes_to(self, name: str, reason: str) -> None:
        for call_id, route in list(self._routes.items()):
            if route[0] == name:
                del self._routes[call_id]
                self._fail(route[1], 503, reason)

    def _send(self, child: Child, message: dict[str, Any]) -> bool:
        """Send without ever blocking the main loop; False if the child is not listening.

        A child's reader thread drains its pipe at once, so a pipe too full to take
        a message means that thread is stuck: the child is killed as hung.
        """
        conn = child.conn
        if conn is None:
            return False
        try:
            _, writable, _ = select.select([], [conn.fileno()], [], 0)
            if not writable:
                self._kill_hung(child, "not reading its pipe")
                return False
            conn.send(message)
            return True
        except (OSError, ValueError):
            self._close_pipe(child)
            return False

    def _kill_hung(self, child: Child, why: str) -> None:
        if not child.alive:
            return
        child.last_error = f"hung: {why}"
        log.error("%s is hung (%s): killing it", child.name, why, extra={"plugin": child.name})
        signal_group(child.pid, signal.SIGKILL)
        if child.state not in ("Stopping",):
            child.state = "Stopping"

    def _close_pipe(self, child: Child) -> None:
        if child.conn is not None:
            try:
                self._selector.unregister(child.conn)
            except (KeyError, ValueError):
                pass
            child.conn.close()
            child.conn = None
        self._fail_routes_to(child.name, f"plugin {child.name!r} exited")

    # -- binary output -----------------------------------------------------------------
    def _on_output(self, child: Child) -> None:
        try:
            data = os.read(child.output_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_output(child)
            return
        lines = (child.output_buffer + data).split(b"\n")
        child.output_buffer = lines.pop()
        if len(child.output_buffer) > _OUTPUT_LINE_LIMIT:
            lines.append(child.output_buffer)
            child.output_buffer = b""
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip("\r")
            if text:
                log.info("%s", text, extra={"plugin": child.name, "fields": {"stream": "output"}})

    def _close_output(self, child: Child) -> None:
        if child.output_fd < 0:
            return
        if child.output_buffer:
            log.info("%s", child.output_buffer.decode("utf-8", "replace"),
                     extra={"plugin": child.name, "fields": {"stream": "output"}})
            child.output_buffer = b""
        try:
            self._selector.unregister(child.output_fd)
        except (KeyError, ValueError):
            pass
        if child.popen is not None and child.popen.stdout is not None:
            child.popen.stdout.close()
        child.output_fd = -1

    # -- exits ---------------------------------------------------------------------
    def _on_signals(self) -> None:
        try:
            data = self._signal_r.recv(4096)
        except BlockingIOError:
            return
        for signum in data:
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.begin_shutdown(f"received {signal.Signals(signum).name}")
            elif signum == signal.SIGHUP:
                log.info("SIGHUP ignored: restart the container to load a new config")

    def _reap(self) -> None:
        for pid, code in reap_all():
            child = next((c for c in self.children if c.pid == pid), None)
            if child is None:
                log.debug("reaped adopted orphan %d (exit %d)", pid, code)
                continue
            self._on_exit(child, code)

    def _on_exit(self, child: Child, code: int) -> None:
        signal_group(child.pid, signal.SIGKILL)  # whatever it left behind in its group
        ran_for = time.monotonic() - child.started_at
        if child.popen is not None:
            child.popen.returncode = code
            self._on_output(child) if child.output_fd >= 0 else None
            self._close_output(child)
            child.popen = None
        if child.conn is not None:
            self._on_pipe(child)  # last words (an init error) before the pipe closes
            self._close_pipe(child)
        child.pid = 0
        child.ready = False
        child.stop_deadline = None
        child.last_exit = code
        self._gauges = {k: v for k, v in self._gauges.items() if k[0] != child.name}
        level = logging.INFO if code == 0 or child.state == "Stopping" else logging.ERROR
        log.log(level, "%s exited (%s) after %.1fs", child.name, _describe_exit(code), ran_for,
                extra={"plugin": child.name})
        self._after_exit(child, code, ran_for)

    def _after_exit(self, child: Child, code: int, ran_for: float = 0.0) -> None:
        if self.shutting_down or not child.wanted or self.mode != "serving":
            child.state = "Stopped"
            child.restart_after_stop = False
            self._fail_queued_calls(child, f"plugin {child.name!r} stopped")
            return
        if child.restart_after_stop:
            child.restart_after_stop = False
            child.restarts += 1
            self._start(child)
            return
        if code != 0 and not child.last_error.startswith("hung:"):
            child.last_error = child.run_error or _describe_exit(code)
        decision = child.tracker.on_exit(time.monotonic(), code, ran_for)
        if decision.restart:
            child.restarts += 1
            child.state = "Backoff" if decision.delay else "Pending"
            if decision.delay:
                log.info("restarting %s in %.2fs", child.name, decision.delay,
                         extra={"plugin": child.name})
                child.next_start_at = time.monotonic() + decision.delay
            else:
                self._start(child)
            return
        child.state = decision.final_state
        self._fail_queued_calls(child, f"plugin {child.name!r} is {decision.final_state}")
        if decision.final_state == "Failed":
            child.last_error = decision.reason
            log.error("%s failed: %s", child.name, decision.reason, extra={"plugin": child.name})
            self._report_failure(child, decision.reason)
        else:
            log.info("%s %s: %s", child.name, decision.final_state.lower(), decision.reason,
                     extra={"plugin": child.name})

    def _report_failure(self, child: Child, reason: str) -> None:
        """A Kubernetes Event on the pod (or a Local event row) for a failed plugin."""
        storage = self.child("storage")
        if storage is None or storage.conn is None or child is storage:
            return
        cfg = self._event_storage_config()
        self._send(storage, {"t": "call", "id": 0, "method": "store", "params": {
            "cfg": cfg, "op": "emit_event",
            "args": ("PluginFailed", f"kidecar plugin {child.name} failed: {reason}", True)}})

    def _event_storage_config(self) -> StorageConfig:
        for spec in self.config.plugins:
            cfg = getattr(spec.config, "storage", None) or getattr(spec.config, "storage_config",
                                                                   None)
            if isinstance(cfg, StorageConfig) and cfg.type == "InKube":
                return cfg
        return StorageConfig()

    # -- operator actions --------------------------------------------------------------
    def restart_child(self, child: Child) -> None:
        child.wanted = True
        child.tracker.reset()
        if child.alive:
            child.restart_after_stop = True
            self._stop(child)
        else:
            child.next_start_at = None
            child.restarts += 1
            self._start(child)

    def stop_child(self, child: Child) -> None:
        child.wanted = False
        child.next_start_at = None
        child.restart_after_stop = False
        if child.alive:
            self._stop(child)
        else:
            child.state = "Stopped"

    def start_child(self, child: Child) -> None:
        child.wanted = True
        child.tracker.reset()
        if not child.alive:
            child.next_start_at = None
            self._start(child)

    def _stop(self, child: Child, grace: float | None = None) -> None:
        if not child.alive:
            return
        child.state = "Stopping"
        if child.conn is not None:
            self._send(child, {"t": "stop"})
        signal_group(child.pid, signal.SIGTERM)
        grace = child.restart.stop_grace_seconds if grace is None else grace
        if child.kind == "http":
            grace = max(grace, self.config.http.graceful_timeout_seconds + 1.0)
        child.stop_deadline = time.monotonic() + grace

    # -- shutdown --------------------------------------------------------------------------
    def begin_shutdown(self, reason: str) -> None:
        if self.shutting_down:
            return
        log.info("shutting down: %s", reason)
        self.shutting_down = True
        self._shutdown_deadline = time.monotonic() + self.options.shutdown_grace_seconds
        self._boot_index = len(self.children)
        for child in self.children:
            child.next_start_at = None
            child.restart_after_stop = False
            self._fail_queued_calls(child, "kidecar is shutting down")
            if not child.alive:
                child.state = "Stopped"

    def _shutdown_step(self) -> None:
        self._stop_in_order(self._shutdown_deadline)

    def _stop_in_order(self, deadline: float) -> bool:
        """Stop HTTP first (no new requests), then plugins in reverse boot order, storage
        last, one at a time; True while some child is still alive."""
        remaining = max(0.0, deadline - time.monotonic())
        order = [c for c in self.children if c.kind == "http"]
        order += [c for c in reversed(self.children) if c.kind in ("plugin", "binary")]
        order += [c for c in self.children if c.kind == "storage"]
        for child in order:
            if child.alive and child.state != "Stopping":
                self._stop(child, grace=min(child.restart.stop_grace_seconds, remaining))
            if child.alive:
                return True
        return False

    def _begin_drain(self, peer: int) -> None:
        """A newer kidecar serves our socket: stop accepting, finish, stop plugins, idle."""
        log.info("hot upgrade: version %s serves now; draining", peer)
        self.mode = "draining"
        grace = max([self.config.http.graceful_timeout_seconds + 1.0]
                    + [c.restart.stop_grace_seconds for c in self.children])
        self._drain_deadline = time.monotonic() + grace * 2
        self._boot_index = len(self.children)  # never start what was still waiting to boot
        for child in self.children:
            child.wanted = False
            child.next_start_at = None
            child.restart_after_stop = False
            self._fail_queued_calls(child, "kidecar handed over to a newer instance")
            if not child.alive:
                child.state = "Stopped"

    def _drain_step(self) -> None:
        if self._stop_in_order(self._drain_deadline):
            return
        if self._listen_socket is not None:
            self._listen_socket.close()  # close, never shutdown(): the newer one uses it
            self._listen_socket = None
        self.mode = "idle"
        log.info("hot upgrade: drained; idle (the newer instance serves)")

    def _final_sweep(self) -> None:
        if self._control is not None:
            self._control.close()
        if self._handoff_server is not None:
            self._handoff_server.close()
        for child in self.children:
            if child.alive:
                signal_group(child.pid, signal.SIGKILL)
        leftovers = kill_descendants()
        if leftovers:
            log.warning("killed %d leftover descendant process(es)", leftovers)
        if self._listen_socket is not None:
            self._listen_socket.close()
        log.info("kidecar stopped")

    # -- control requests --------------------------------------------------------------------
    def _submit(self, message: dict[str, Any]) -> dict[str, Any]:
        """Called by a control-channel thread: hand to the main loop and wait."""
        request = _ControlRequest(message)
        self._requests.put(request)
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass
        timeout = float(message.get("timeout", 5.0))
        if not request.done.wait(timeout):
            raise ControlError(f"supervisor main loop did not answer within {timeout:g}s")
        assert request.reply is not None
        return request.reply

    def _serve_control_requests(self) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                self._serve_control(request)
            except Exception as exc:  # noqa: BLE001 - a bad request must not kill the loop
                log.exception("control request failed")
                request.answer({"ok": False, "status": 500, "error": str(exc)})

    def _serve_control(self, request: _ControlRequest) -> None:
        message = request.message
        op = message.get("op")
        now = time.monotonic()
        if op == "health":
            request.answer(self._health())
        elif op == "http_serving":
            http = self.child("http")
            if http is not None and http.alive:
                http.ready = True
            request.answer({"ok": True, "result": None})
        elif op == "handed_over":
            self._begin_drain(int(message.get("peer", 0)))
            request.answer({"ok": True, "result": None})
        elif op == "ready":
            request.answer(self._readiness())
        elif op == "plugins":
            request.answer({"ok": True, "result": [c.snapshot(now) for c in self.children]})
        elif op == "metrics":
            request.answer({"ok": True, "result": self._metrics_snapshot(now)})
        elif op == "call":
            timeout = float(message.get("timeout", 5.0))
            self._forward(self.child(str(message.get("target"))), message,
                          ("control", request, None), time.monotonic() + timeout + 1.0)
        elif op in ("plugin", "restart", "stop", "start"):
            self._plugin_op(request, str(op), str(message.get("name")), now)
        else:
            request.answer({"ok": False, "status": 400, "error": f"unknown op {op!r}"})

    def _plugin_op(self, request: _ControlRequest, op: str, name: str, now: float) -> None:
        child = self.child(name)
        if child is None:
            request.answer({"ok": False, "status": 404, "error": f"unknown plugin {name!r}"})
            return
        if self.shutting_down and op != "plugin":
            request.answer({"ok": False, "status": 503, "error": "kidecar is shutting down"})
            return
        if child.internal and op in ("stop", "start"):
            request.answer({"ok": False, "status": 409, "error": f"{name!r} is part of kidecar "
                            "itself: it can be restarted, not stopped or started"})
            return
        if op == "restart":
            self.restart_child(child)
        elif op == "stop":
            self.stop_child(child)
        elif op == "start":
            self.start_child(child)
        request.answer({"ok": True, "result": child.snapshot(now)})

    def _health(self) -> dict[str, Any]:
        failed = [c.name for c in self.children if c.state == "Failed"]
        if self.shutting_down:
            return {"ok": False, "status": 503, "error": "kidecar is shutting down"}
        if failed:
            return {"ok": False, "status": 503, "error": f"plugin(s) failed: {', '.join(failed)}",
                    "failed": failed}
        return {"ok": True, "result": {
            "status": "ok", "version": __version__, "mode": self.mode,
            "sidecarsetVersion": self._handoff_settings.version if self._handoff_settings else None,
            "uptime": round(time.monotonic() - self.started_at, 3)}}

    def _readiness(self) -> dict[str, Any]:
        if self.mode != "serving" and not self.shutting_down:
            # the idle half of a hot upgrade must not make the pod unready
            return {"ok": True, "result": {"status": "ready", "mode": self.mode}}
        # every configured plugin counts, even one an operator stopped on purpose
        waiting = [c.name for c in self.children
                   if not (c.state == "Running" and c.ready) and c.state != "Completed"]
        if self.shutting_down or waiting:
            reason = "shutting down" if self.shutting_down else f"not ready: {', '.join(waiting)}"
            return {"ok": False, "status": 503, "error": reason, "waiting": waiting}
        return {"ok": True, "result": {"status": "ready"}}

    def _metrics_snapshot(self, now: float) -> dict[str, Any]:
        return {
            "uptime": now - self.started_at,
            "plugins": [c.snapshot(now) for c in self.children],
            "gauges": [{"plugin": p, "name": n, "labels": dict(lbl), "value": v}
                       for (p, n, lbl), v in self._gauges.items()],
        }


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
