"""The parent process: the main loop and the order of things (boot, shutdown, drain).

One thread (the main loop) owns all state. It sleeps in ``select`` on: the
signal wake-up fd (SIGCHLD makes crash-to-restart immediate, no polling;
SIGTERM only queues a shutdown), each child's pipe, each binary's output pipe
and the control-request wake-up pipe; timers (backoff, heartbeat deadlines,
stop deadlines) bound the sleep. Each wake-up does a bounded amount of work,
so a control request (``/healthz``) is answered within one turn.

Where the rest lives: a child's life and its transitions in ``child.py``
(``states.py`` names them); fork/exec, pipe and output I/O in ``launcher.py``;
routed calls in ``router.py``; control requests in ``control.py``; the HTTP
child and its gapless restart in ``http_child.py``; the SidecarSet hot
upgrade's socket in ``upgrade.py``; a binary's output limits in
``output_limiter.py``.
"""

from __future__ import annotations

import gc
import logging
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kidecar_supervisor import __version__
from kidecar_supervisor.child import Child
from kidecar_supervisor.children import become_subreaper, kill_descendants, reap_all
from kidecar_supervisor.config import SidecarConfig
from kidecar_supervisor.control import ControlInbox, ControlTable
from kidecar_supervisor.control_channel import (
    ControlServer,
    control_socket_path,
    create_authkey,
)
from kidecar_supervisor.http_child import HttpChild
from kidecar_supervisor.launcher import Launcher
from kidecar_supervisor.output_limiter import OutputLimiter, OutputLimits
from kidecar_supervisor.plugin_api import PodIdentity, storage_configs
from kidecar_supervisor.prefork import build_shared
from kidecar_supervisor.protocol import (
    STORAGE,
    STORE_METHOD,
    Op,
    PipeMessage,
    request,
    store_params,
)
from kidecar_supervisor.router import Router, call_target
from kidecar_supervisor.states import (
    RUNNING_ON_START,
    USER_KINDS,
    ChildKind,
    ChildState,
    Mode,
)
from kidecar_supervisor.storage.base import StorageConfig
from kidecar_supervisor.upgrade import HotUpgrade

log = logging.getLogger("kidecar.supervisor")

_BOOT_STEP_TIMEOUT = 30.0
#: control requests answered per wake-up (the rest on the next turn, at once)
_CONTROL_PER_WAKEUP = 64


@dataclass
class RunOptions:
    state_dir: Path
    port: int
    host: str = "0.0.0.0"
    token: str = ""
    shutdown_grace_seconds: float = 25.0
    #: ``kidecar run --empty``: serve nothing, only wait (SidecarSet hotUpgradeEmptyImage)
    empty: bool = False


class Supervisor:
    def __init__(self, config: SidecarConfig, options: RunOptions) -> None:
        self.config = config
        self.options = options
        self.identity = PodIdentity(
            pod_name=os.environ.get("POD_NAME", ""),
            namespace=os.environ.get("POD_NAMESPACE", ""),
            node_name=os.environ.get("NODE_NAME", ""),
        )
        self.started_at = time.monotonic()
        self.shutting_down = False
        self.exit_code = 0
        self.mode = Mode.SERVING
        self._selector = selectors.DefaultSelector()
        self.inbox = ControlInbox()
        self.router = Router(self)
        self.table = ControlTable(self)
        self.upgrade = HotUpgrade(options.host, options.port, self._handed_over_from_thread)
        self.http = HttpChild(config, options.shutdown_grace_seconds,
                              lambda: self.upgrade.listener)
        self.launcher = Launcher(self._selector, options.state_dir, self.identity,
                                 self.http.body, self.http.keep_fds, self)
        self.children = self._plan_children(config)
        self._gauges: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
        self._boot_index = 0
        self._boot_step_since = 0.0
        #: when every child must be gone (shutdown) or stopped (drain)
        self._stop_by = 0.0
        #: HTTP children sent SIGTERM to stop serving (shutdown, drain); their store stays
        self._told_to_stop_serving: set[int] = set()
        self._control: ControlServer | None = None

    # -- plan --------------------------------------------------------------------
    def _plan_children(self, config: SidecarConfig) -> list[Child]:
        """Boot order: HTTP (and the store in it), then plugins by ascending bootOrder
        (stable)."""
        children = [self.http.new_child(self.launcher)]
        specs = sorted((s for s in config.plugins if s.enabled), key=lambda s: s.boot_order)
        for spec in specs:
            kind = ChildKind.BINARY if spec.is_binary else ChildKind.PLUGIN
            child = Child(spec.name, kind, spec.restart, self.launcher, spec=spec,
                          boot_order=spec.boot_order)
            if kind == ChildKind.BINARY:
                limits = OutputLimits.for_rates(spec.config.output_lines_per_second,
                                                spec.config.output_bytes_per_second)
                child.output = OutputLimiter(limits, time.monotonic())
            children.append(child)
        return children

    def child(self, name: str) -> Child | None:
        return next((c for c in self.children if c.name == name), None)

    def call_target(self, name: str) -> Child | None:
        """Who answers calls to ``name`` (``router.call_target``)."""
        return call_target(self.children, name)

    def _every_child(self) -> list[Child]:
        """The children, and HTTP children on their way in or out (restart of http)."""
        return self.children + self.http.extra()

    # -- start-up ----------------------------------------------------------------
    def run(self) -> int:
        """Boot, serve until SIGTERM/SIGINT, stop everything; the process exit code."""
        self.options.state_dir.mkdir(parents=True, exist_ok=True)
        if become_subreaper():
            log.debug("child subreaper enabled")
        self._signal_r, self._signal_w = socket.socketpair()
        self._signal_r.setblocking(False)
        self._signal_w.setblocking(False)
        signal.set_wakeup_fd(self._signal_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: None)  # the wake-up fd carries the signal number
        self._selector.register(self._signal_r, selectors.EVENT_READ, ("signal", None))
        self._selector.register(self.inbox.wake_fd, selectors.EVENT_READ, ("wake", None))
        mode, why_idle = self.upgrade.obtain_listener(self.options.empty)
        if mode == Mode.IDLE:
            log.info("%s", why_idle)
            self.mode = Mode.IDLE
            self.children = []
        elif self.upgrade.took_over:
            # both instances accept on the shared socket from now on: ours must not
            # answer before our plugins run, so HTTP (booted first, for its store) waits
            self.http.serve_at_once = False
        address = control_socket_path(self.options.state_dir)
        authkey = create_authkey(self.options.state_dir)
        self._control = ControlServer(address, authkey, self.inbox.submit)
        self._control.start()
        self.http.prepare(address, authkey, self.options.token)
        gc.collect()
        build_shared()
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

    # -- main loop -----------------------------------------------------------------
    def _loop(self) -> None:
        timeout = 0.0  # boot at once
        while True:
            # events first, timers after: after any stall, heartbeats already waiting
            # in the pipes are read before a plugin is judged hung
            for key, events in self._selector.select(timeout):
                kind, child = key.data
                if kind == "signal":
                    self._on_signals()
                elif kind == "wake":
                    self.inbox.clear_wakeups()
                elif kind == "pipe":
                    if events & selectors.EVENT_READ:
                        self._on_pipe(child)
                    if events & selectors.EVENT_WRITE:
                        self.launcher.flush(child)
                elif kind == "output":
                    self.launcher.pump_output(child)
            self._reap()
            for pending in self.inbox.take(_CONTROL_PER_WAKEUP):
                self.table.serve(pending)
            now = time.monotonic()
            self._run_timers(now)
            if self.shutting_down and not any(c.alive for c in self._every_child()):
                return
            timeout = 0.0 if self.inbox.pending() else self._next_timer(time.monotonic())

    def _next_timer(self, now: float) -> float:
        deadlines = [now + 1.0]  # a floor tick: heartbeat checks need no exact timer
        deadlines += [d for c in self._every_child() if (d := c.next_deadline()) is not None]
        return max(0.0, min(deadlines) - now)

    def _run_timers(self, now: float) -> None:
        self.router.expire(now)
        for child in self._every_child():
            self.launcher.check_outbox(child, now)
            child.tick(now, may_start=not self.shutting_down)
            if child.output is not None:
                self.launcher.report_dropped_output(child, child.output.report(now))
        if self.shutting_down:
            self._stop_for_shutdown(self._stop_by)
        elif self.mode == Mode.DRAINING:
            self._drain_step()
        elif self.mode == Mode.SERVING:
            self._boot_next(now)
            self._finish_takeover()

    def restarts_allowed(self) -> bool:
        """An exited child comes back only while we serve and are not shutting down."""
        return not self.shutting_down and self.mode == Mode.SERVING

    # -- boot order ------------------------------------------------------------------
    def _boot_next(self, now: float) -> None:
        """Start children one at a time: the next only once the previous has started."""
        while self._boot_index < len(self.children):
            current = self.children[self._boot_index]
            if current.state == ChildState.PENDING:
                current.start()
                self._boot_step_since = now
            settled = current.state != ChildState.STARTING or current.kind in RUNNING_ON_START
            if not settled and now - self._boot_step_since < _BOOT_STEP_TIMEOUT:
                return
            if not settled:
                log.warning("%s is still starting after %.0fs; starting the next plugin",
                            current.name, _BOOT_STEP_TIMEOUT)
            self._boot_index += 1

    def _finish_takeover(self) -> None:
        """Let our HTTP serve once the plugins run; then tell the older instance to stop."""
        if not self.upgrade.took_over or self._boot_index < len(self.children):
            return
        self.http.allow_serving(self.children, self.send)
        http = self.child("http")
        if http is not None and http.ready:
            self.upgrade.finish_takeover()

    # -- signals and exits ------------------------------------------------------------
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
            child = next((c for c in self._every_child() if c.pid == pid), None)
            if child is None:
                log.debug("reaped adopted orphan %d (exit %d)", pid, code)
                continue
            if not self.http.exited(self.children, child, code, self._on_exit):
                self._on_exit(child, code)

    def _on_exit(self, child: Child, code: int) -> None:
        if child.popen is not None:
            child.popen.returncode = code
        if child.output_fd >= 0:
            self.launcher.pump_output(child)  # what it wrote last
            self.launcher.finish_output(child)
        if child.conn is not None:
            self._on_pipe(child)  # last words (an init error) before the pipe closes
            self.launcher.close_pipe(child)
        if not child.exits_for_recycle(code):
            # a recycled plugin's gauges stay: its next process carries on from them
            self._gauges = {k: v for k, v in self._gauges.items() if k[0] != child.name}
        child.on_exit(code, may_restart=self.restarts_allowed())

    # ChildEvents (from the launcher) ----------------------------------------------------
    def child_running(self, child: Child) -> None:
        self.router.on_running(child)

    def child_settled(self, child: Child, reason: str) -> None:
        self.router.on_settled(child, reason)
        if child.state == ChildState.FAILED:
            self._report_failure(child, child.last_error)

    def pipe_closed(self, child: Child) -> None:
        self.router.on_pipe_closed(child)

    def _report_failure(self, child: Child, reason: str) -> None:
        """A Kubernetes Event on the pod (or a Local event row) for a failed plugin."""
        storage = self.call_target(STORAGE)
        if storage is None or storage.conn is None or child is storage:
            return
        self.router.notify(storage, STORE_METHOD, dict(store_params(
            self._event_storage_config(), "emit_event",
            "PluginFailed", f"kidecar plugin {child.name} failed: {reason}", True)))

    def _event_storage_config(self) -> StorageConfig:
        """The first InKube store a plugin's config declares (else Local): Events go
        where the operator told kidecar to write to the cluster."""
        for spec in self.config.plugins:
            for cfg in storage_configs(spec.config):
                if cfg.type == "InKube":
                    return cfg
        return StorageConfig()

    # -- pipes and output ----------------------------------------------------------------
    def _on_pipe(self, child: Child) -> None:
        read = self.launcher.read_pipe(child)
        for message in read.messages:
            self._on_message(child, message)
        if read.garbled:
            child.kill_hung(f"garbled pipe: {read.garbled}")
            self.launcher.close_pipe(child)
        elif read.eof:
            self.launcher.close_pipe(child)

    def _on_message(self, child: Child, message: PipeMessage) -> None:
        child.on_message(message)
        if message["t"] == "gauge":
            labels = tuple(sorted((message.get("labels") or {}).items()))
            self._gauges[(child.name, message["name"], labels)] = float(message["value"])
        elif message["t"] == "call":
            self.router.from_child(child, message, time.monotonic())
        elif message["t"] == "reply":
            self.router.on_reply(message)
        elif message["t"] == "recycle":
            self._recycle(child, str(message.get("reason") or "asked for a fresh process"))

    def _recycle(self, child: Child, reason: str) -> None:
        """A plugin, idle, asks for a fresh process (``PluginContext.recycle``): granted
        only to a running plugin no call waits on, while kidecar serves."""
        if (child.kind != ChildKind.PLUGIN or child.state != ChildState.RUNNING
                or not self.restarts_allowed() or self.router.waits_on(child)):
            log.debug("%s asked to be recycled (%s): not now (%s)", child.name, reason,
                      child.state, extra={"plugin": child.name})
            return
        child.recycle(child.restart.stop_grace_seconds, reason)

    def send(self, child: Child, message: PipeMessage) -> bool:
        return self.launcher.send(child, message)

    # -- control host (see control.ControlHost) ------------------------------------------
    def clock(self) -> float:
        return time.monotonic()

    def sidecarset_version(self) -> int | None:
        return self.upgrade.version

    def gauges(self) -> list[dict[str, Any]]:
        return [{"plugin": p, "name": n, "labels": dict(lbl), "value": v}
                for (p, n, lbl), v in self._gauges.items()]

    def operator_action(self, child: Child, op: Op) -> None:
        grace = self.http.grace(child, child.restart.stop_grace_seconds)
        if op == Op.RESTART and child.kind == ChildKind.HTTP and child.alive:
            self.http.restart(child)  # the new one serves before the old one stops
        elif op == Op.RESTART:
            child.restart_now(grace)
        elif op == Op.STOP:
            child.disable(grace)
        elif op == Op.START:
            child.enable()

    def http_serving(self, pid: int) -> None:
        self.http.serving(self.children, pid)

    def handed_over(self, peer: int) -> None:
        self._begin_drain(peer)

    def _handed_over_from_thread(self, peer: int) -> None:
        """Called from the handoff thread: let the main loop drain."""
        self.inbox.submit(request(Op.HANDED_OVER, peer=peer, timeout=10.0))

    # -- shutdown and drain -----------------------------------------------------------------
    def begin_shutdown(self, reason: str) -> None:
        """SIGTERM: everything must be gone within one grace period (the kubelet's 30 s
        default leaves room for the default 25 s); see ``_stop_for_shutdown``."""
        if self.shutting_down:
            return
        log.info("shutting down: %s", reason)
        self.shutting_down = True
        self._stop_by = time.monotonic() + self.options.shutdown_grace_seconds
        self._boot_index = len(self.children)
        self.router.fail_all_queued("kidecar is shutting down")
        for child in self._every_child():
            child.stand_down(for_good=False)

    def _stop_for_shutdown(self, deadline: float) -> None:
        """One deadline for all: HTTP stops accepting at once and keeps its in-flight
        requests until they are answered (or the deadline); at the same moment the
        plugins begin to stop, in reverse boot order, each within what is left of the
        deadline, so a plugin call in flight is answered (by the plugin, or 503 when it
        exits) while HTTP can still write the answer. The store (in the HTTP child)
        stops last: it takes the plugins' last results."""
        remaining = max(0.0, deadline - time.monotonic())
        self._stop_serving()
        self._stop_one_by_one(self._plugins_then_http(), remaining)

    def _stop_serving(self) -> None:
        """SIGTERM each HTTP child once: its worker stops accepting, its store stays."""
        for http in (c for c in self._every_child() if c.kind == ChildKind.HTTP):
            if http.alive and http.pid not in self._told_to_stop_serving:
                self._told_to_stop_serving.add(http.pid)
                self.launcher.signal_group(http.pid, signal.SIGTERM)

    def _plugins_then_http(self) -> list[Child]:
        order = [c for c in reversed(self.children) if c.kind in USER_KINDS]
        return order + [c for c in self._every_child() if c.kind == ChildKind.HTTP]

    def _stop_one_by_one(self, order: list[Child], remaining: float) -> bool:
        """Stop each child once the one before it is gone; True while one is alive."""
        for child in order:
            if child.alive and child.state != ChildState.STOPPING:
                # the HTTP child stopped serving when the shutdown began: its store gets
                # what is left to take the last results
                child.stop(remaining if child.kind == ChildKind.HTTP
                           else min(child.restart.stop_grace_seconds, remaining))
            if child.alive:
                return True
        return False

    def _begin_drain(self, peer: int) -> None:
        """A newer kidecar serves our socket: stop accepting, finish, stop plugins, idle."""
        log.info("hot upgrade: version %s serves now; draining", peer)
        self.mode = Mode.DRAINING
        grace = max([self.http.settings().graceful_timeout_seconds + 1.0]
                    + [c.restart.stop_grace_seconds for c in self.children])
        self._stop_by = time.monotonic() + grace * 2
        self._boot_index = len(self.children)  # never start what was still waiting to boot
        self.router.fail_all_queued("kidecar handed over to a newer instance")
        for child in self._every_child():
            child.stand_down(for_good=True)

    def _drain_step(self) -> None:
        """HTTP stops accepting first (its in-flight requests finish, plugins still
        answer them), then plugins in reverse boot order, the store last: a newer
        instance serves, so there is no hurry (unlike a SIGTERM)."""
        remaining = max(0.0, self._stop_by - time.monotonic())
        self._stop_serving()
        if self._stop_one_by_one(self._plugins_then_http(), remaining):
            return
        self.upgrade.release()
        self.mode = Mode.IDLE
        log.info("hot upgrade: drained; idle (the newer instance serves)")

    def _final_sweep(self) -> None:
        if self._control is not None:
            self._control.close()
        for child in self._every_child():
            if child.alive:
                self.launcher.signal_group(child.pid, signal.SIGKILL)
        leftovers = kill_descendants()
        if leftovers:
            log.warning("killed %d leftover descendant process(es)", leftovers)
        self.upgrade.close()
        log.info("kidecar stopped")
