"""One child of the supervisor across its restarts, and every move of its life.

A ``Child`` owns its state: each transition is a named method (``start``,
``on_message``, ``on_exit``, ``stop``, ``kill_hung``, ``tick`` and the
operator's ``restart``/``disable``/``enable``), checked against
``states.TRANSITIONS``, so an illegal move raises instead of leaving a child in
a state nothing handles. Whatever touches the world (fork, exec, signals, the
pipe, the clock) goes through ``ChildOps``: the supervisor passes the real
one (``launcher.Launcher``), the unit tests a fake, so every transition is
tested without forking.

What a child does *not* know: other children, routed calls, the HTTP layer.
It tells its ops when it runs and when it settles; the supervisor passes that
on to the router (queued calls) and to storage (a failure Event).
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field
from typing import Any, Protocol

from kidecar_supervisor.config import PluginSpec, RestartSettings
from kidecar_supervisor.exit_status import describe_exit
from kidecar_supervisor.output_limiter import OutputLimiter
from kidecar_supervisor.pipe_frames import PipeFrames
from kidecar_supervisor.protocol import PipeMessage
from kidecar_supervisor.protocol import stop as stop_message
from kidecar_supervisor.restart_policy import RestartTracker
from kidecar_supervisor.states import (
    CALLABLE_KINDS,
    RUNNING_ON_START,
    STARTABLE,
    ChildKind,
    ChildState,
    IllegalTransition,
    check_transition,
)

log = logging.getLogger("kidecar.child")

#: exit code recorded when the process could not even be started (as a shell does)
EXIT_CANNOT_START = 127


@dataclass
class Process:
    """What starting a process gave: its pid and the ends the supervisor reads."""

    pid: int
    conn: Any = None       # the supervisor's end of the pipe (forked kinds)
    output_fd: int = -1    # stdout+stderr of an exec'd program (binary)
    popen: Any = None


class ChildOps(Protocol):
    """The side effects a child needs; a fake in tests, ``Launcher`` for real."""

    def clock(self) -> float:
        """Monotonic seconds."""
        ...

    def fork(self, child: Child) -> Process:
        """Fork a plugin, storage or HTTP process; raise OSError if impossible."""
        ...

    def spawn(self, child: Child) -> Process:
        """Exec a binary plugin's program; raise OSError if impossible."""
        ...

    def signal_group(self, pid: int, sig: int) -> None:
        """Signal the child's whole process group (it leads one)."""
        ...

    def send(self, child: Child, message: PipeMessage) -> bool:
        """Write to the child's pipe without blocking; False if it does not listen."""
        ...

    def running(self, child: Child) -> None:
        """It just became Running: calls that waited for it can go now."""
        ...

    def settled(self, child: Child, reason: str) -> None:
        """It reached Stopped, Completed or Failed: calls waiting for it fail with
        ``reason``; a Failed one is reported (an Event on the pod)."""
        ...


@dataclass
class Child:
    """Everything the supervisor knows about one child, across its restarts."""

    name: str
    kind: ChildKind
    restart: RestartSettings
    ops: ChildOps
    spec: PluginSpec | None = None
    boot_order: int = 0
    internal: bool = False
    state: ChildState = ChildState.PENDING
    pid: int = 0
    conn: Any = None
    popen: Any = None
    output_fd: int = -1
    started_at: float = 0.0  # monotonic
    last_message_at: float = 0.0
    ready: bool = False
    restarts: int = 0
    last_error: str = ""
    last_exit: int | None = None
    version: str = ""
    infos: dict[str, Any] = field(default_factory=dict)
    #: False once an operator (or a drain) stopped it: it is not restarted
    wanted: bool = True
    next_start_at: float | None = None
    stop_deadline: float | None = None
    restart_after_stop: bool = False
    #: replaced by a fresh process at its own request (``recycle``): from the request
    #: until the new process reports its readiness, ``/readyz`` counts it as ready and
    #: calls to it wait (a fresh hot_update restores its state first: no 409 meanwhile)
    recycling: bool = False
    #: how many times it was recycled (not restarts: nothing failed)
    recycles: int = 0
    #: the error this run reported itself (an init failure), kept over its exit code
    run_error: str = ""
    #: bytes read from the child's pipe that do not make a whole message yet
    inbox: PipeFrames = field(default_factory=PipeFrames)
    #: messages for the child its pipe did not take yet, and when it last took some
    outbox: bytearray = field(default_factory=bytearray)
    outbox_since: float = 0.0
    #: a binary's output: rate limit and partial line (set by the supervisor)
    output: OutputLimiter | None = None
    tracker: RestartTracker = field(init=False)

    def __post_init__(self) -> None:
        self.tracker = RestartTracker(self.restart)

    @property
    def alive(self) -> bool:
        return self.pid != 0

    @property
    def callable(self) -> bool:
        """Answers routed calls (plugins, and HTTP for its store; not binaries)."""
        return self.kind in CALLABLE_KINDS

    # -- the one place a state changes --------------------------------------------
    def _become(self, new: ChildState) -> None:
        if new == self.state:
            return
        check_transition(self.name, self.state, new)
        log.debug("%s: %s -> %s", self.name, self.state, new, extra={"plugin": self.name})
        self.state = new

    # -- start ----------------------------------------------------------------------
    def start(self) -> None:
        """Start a process now (from Pending, Backoff or a final state)."""
        if self.alive or self.state not in STARTABLE:
            raise IllegalTransition(self.name, self.state, "start")
        self.ready = False
        self.infos = {}
        self.last_exit = None
        self.run_error = ""
        try:
            process = self.ops.spawn(self) if self.kind == ChildKind.BINARY else self.ops.fork(self)
        except OSError as exc:
            # kept as this run's own error: "exit code 127" alone would hide why
            self.run_error = self.last_error = f"cannot start: {exc}"
            log.error("%s cannot start: %s", self.name, exc, extra={"plugin": self.name})
            self._after_exit(EXIT_CANNOT_START, 0.0, may_restart=True)
            return
        self.pid, self.conn, self.output_fd, self.popen = (
            process.pid, process.conn, process.output_fd, process.popen)
        self.inbox = PipeFrames()
        self.outbox = bytearray()
        now = self.ops.clock()
        self.started_at = now
        self.last_message_at = now
        self._become(ChildState.RUNNING if self.kind in RUNNING_ON_START else ChildState.STARTING)
        # binaries are ready when running; HTTP once its worker serves (it tells us)
        self.ready = self.kind == ChildKind.BINARY
        log.info("started %s (pid %d)", self.name, self.pid, extra={"plugin": self.name})

    # -- what the child says ----------------------------------------------------------
    def on_message(self, message: PipeMessage) -> None:
        """Its lifecycle messages; any message at all proves it alive. Calls,
        replies and gauges are not the child's business (the supervisor routes them)."""
        self.last_message_at = self.ops.clock()
        if message["t"] == "hb":
            self.infos = message.get("status") or {}
            self.version = message.get("version", self.version)
        elif message["t"] == "started" and self.state == ChildState.STARTING:
            self._become(ChildState.RUNNING)
            self.version = message.get("version", "")
            log.info("%s is running", self.name, extra={"plugin": self.name})
            self.ops.running(self)
        elif message["t"] == "ready":
            self.ready = bool(message.get("ready"))
            if self.recycling:  # the fresh process of a recycle restored its state
                self.recycling = False
                self.ops.running(self)  # the calls held meanwhile go now
        elif message["t"] == "error":
            self.run_error = self.last_error = str(message.get("error", ""))

    def mark_serving(self) -> None:
        """The HTTP worker accepts connections: ready (its heartbeats count from now)."""
        if self.alive:
            self.ready = True
            self.last_message_at = self.ops.clock()

    # -- its end ------------------------------------------------------------------------
    def on_exit(self, code: int, may_restart: bool) -> None:
        """The process was reaped with ``code``: restart it, wait, or settle.

        ``may_restart`` is False while kidecar shuts down or hands over. The
        supervisor has read its last words and closed its pipe before.
        """
        if not self.alive:
            raise IllegalTransition(self.name, self.state, "exit")
        self.ops.signal_group(self.pid, signal.SIGKILL)  # whatever it left in its group
        ran_for = self.ops.clock() - self.started_at
        stopping = self.state == ChildState.STOPPING
        self.pid = 0
        self.conn = None
        self.popen = None
        self.output_fd = -1
        self.ready = False
        self.stop_deadline = None
        self.last_exit = code
        level = logging.INFO if code == 0 or stopping else logging.ERROR
        log.log(level, "%s exited (%s) after %.1fs", self.name, describe_exit(code), ran_for,
                extra={"plugin": self.name})
        self._after_exit(code, ran_for, may_restart)

    def exits_for_recycle(self, code: int) -> bool:
        """This exit ends a recycle (stopped for it, cleanly): a fresh process follows."""
        return self.recycling and self.restart_after_stop and code == 0

    def _after_exit(self, code: int, ran_for: float, may_restart: bool) -> None:
        recycled = self.exits_for_recycle(code)
        self.recycling = False  # a process that ends is never one on its way to ready
        if not may_restart or not self.wanted:
            self.restart_after_stop = False
            self._settle(ChildState.STOPPED, f"plugin {self.name!r} stopped")
            return
        if self.restart_after_stop:  # an operator's restart or a recycle: no policy, no budget
            self.restart_after_stop = False
            if recycled:
                self.recycles += 1
                self.recycling = True  # until the new process says it is ready
            else:
                self.restarts += 1
            self._become(ChildState.PENDING)
            self.start()
            return
        if code != 0 and not self.last_error.startswith("hung:"):
            self.last_error = self.run_error or describe_exit(code)
        decision = self.tracker.on_exit(self.ops.clock(), code, ran_for)
        if decision.restart:
            self.restarts += 1
            if decision.delay:
                self._become(ChildState.BACKOFF)
                log.info("restarting %s in %.2fs", self.name, decision.delay,
                         extra={"plugin": self.name})
                self.next_start_at = self.ops.clock() + decision.delay
            else:
                self._become(ChildState.PENDING)
                self.start()
            return
        final = decision.final_state
        assert final is not None
        if final == ChildState.FAILED:
            self.last_error = decision.reason
            log.error("%s failed: %s", self.name, decision.reason, extra={"plugin": self.name})
        else:
            log.info("%s %s: %s", self.name, final.lower(), decision.reason,
                     extra={"plugin": self.name})
        self._settle(final, f"plugin {self.name!r} is {final}")

    def _settle(self, state: ChildState, reason: str) -> None:
        self._become(state)
        self.ops.settled(self, reason)

    # -- stopping -------------------------------------------------------------------------
    def stop(self, grace: float) -> None:
        """Ask it to stop (pipe + SIGTERM); SIGKILL after ``grace`` seconds (``tick``)."""
        if not self.alive:
            return
        self._become(ChildState.STOPPING)
        if self.callable and self.conn is not None:
            self.ops.send(self, stop_message(grace))
        self.ops.signal_group(self.pid, signal.SIGTERM)
        self.stop_deadline = self.ops.clock() + grace

    def kill_hung(self, why: str) -> None:
        """It does not answer (heartbeat, init, pipe): SIGKILL, its policy decides next."""
        if not self.alive:
            return
        self.last_error = f"hung: {why}"
        log.error("%s is hung (%s): killing it", self.name, why, extra={"plugin": self.name})
        self.ops.signal_group(self.pid, signal.SIGKILL)
        self._become(ChildState.STOPPING)

    def stand_down(self, for_good: bool) -> None:
        """kidecar shuts down (or, ``for_good``, hands over): nothing starts again."""
        if for_good:
            self.wanted = False
        self.next_start_at = None
        self.restart_after_stop = self.recycling = False
        if not self.alive and self.state != ChildState.STOPPED:
            self._settle(ChildState.STOPPED, f"plugin {self.name!r} stopped")

    # -- timers -----------------------------------------------------------------------------
    def tick(self, now: float, may_start: bool) -> None:
        """Due restart, overdue stop (SIGKILL), missing heartbeat or slow init."""
        if self.next_start_at is not None and now >= self.next_start_at:
            self.next_start_at = None
            if self.wanted and may_start:
                self.start()
        if self.stop_deadline is not None and now >= self.stop_deadline and self.alive:
            log.warning("%s did not stop within its grace period: killing it", self.name,
                        extra={"plugin": self.name})
            self.ops.signal_group(self.pid, signal.SIGKILL)
            self.stop_deadline = None
        self._check_heartbeat(now)

    def _check_heartbeat(self, now: float) -> None:
        if not self.alive or not self.callable:
            return
        limit = self.restart.start_timeout_seconds
        if self.state == ChildState.STARTING and now - self.started_at > limit:
            self.kill_hung(f"init() did not finish within {limit:g}s")
            return
        if self.state != ChildState.RUNNING:
            return
        silent = now - self.last_message_at
        if silent > self.restart.heartbeat_timeout_seconds:
            # a serving HTTP child beats only while its worker's poller turns
            what = "the HTTP worker sent no heartbeat" if self.kind == ChildKind.HTTP else (
                "no heartbeat")
            self.kill_hung(f"{what} for {silent:.1f}s")

    def next_deadline(self) -> float | None:
        """The earliest timer of this child (restart or kill), for the loop's sleep."""
        times = [t for t in (self.next_start_at, self.stop_deadline) if t is not None]
        return min(times) if times else None

    # -- operator actions -------------------------------------------------------------------
    def restart_now(self, grace: float) -> None:
        """``POST /plugins/<name>/restart``: stop (if alive) and start, budget reset."""
        self.wanted = True
        self.recycling = False
        self.tracker.reset()
        if self.alive:
            self.restart_after_stop = True
            self.stop(grace)
        else:
            self.next_start_at = None
            self.restarts += 1
            self.start()

    def recycle(self, grace: float, reason: str) -> None:
        """The plugin asked for a fresh process (it is idle): stop it and start anew.

        Calls to it wait meanwhile (the router holds them for a child coming
        back). An exit other than 0 on the way counts as a restart, as usual.
        """
        log.info("recycling %s: %s", self.name, reason, extra={"plugin": self.name})
        self.recycling = True
        self.restart_after_stop = True
        self.stop(grace)

    def disable(self, grace: float) -> None:
        """``POST /plugins/<name>/stop``: stop and stay stopped."""
        self.wanted = False
        self.next_start_at = None
        self.restart_after_stop = self.recycling = False
        if self.alive:
            self.stop(grace)
        elif self.state != ChildState.STOPPED:
            self._settle(ChildState.STOPPED, f"plugin {self.name!r} stopped")

    def enable(self) -> None:
        """``POST /plugins/<name>/start``: run again (fresh budget) if it is not running."""
        self.wanted = True
        self.tracker.reset()
        if not self.alive:
            self.next_start_at = None
            self.start()

    # -- what /plugins shows ------------------------------------------------------------------
    def snapshot(self, now: float) -> dict[str, Any]:
        row = {
            "name": self.name, "kind": self.kind.value, "internal": self.internal,
            "state": self.state.value, "pid": self.pid or None, "ready": self.ready,
            # a child (re)started after ``now`` was read (a restart answered with its
            # snapshot) has run for 0 s, never for a negative time
            "restarts": self.restarts, "recycles": self.recycles,
            "uptime": max(0.0, round(now - self.started_at, 3))
            if self.alive and self.started_at else 0.0,
            "lastError": self.last_error or None, "lastExitCode": self.last_exit,
            "version": self.version, "restartPolicy": self.restart.policy,
            "bootOrder": self.boot_order, "infos": self.infos,
        }
        if self.output is not None:
            row["outputDroppedLines"] = self.output.dropped_lines_total
        return row
