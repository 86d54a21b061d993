"""Control requests, answered by the supervisor's main loop: one table, op → handler.

Channel threads (``control_channel.ControlServer``) hand each request to
``ControlInbox.submit`` and wait; the main loop takes them (``take``) and
answers them through ``ControlTable.serve``. Because the loop answers, an
answer proves the loop is alive, which is what ``/healthz`` means. A handler
either answers at once or hands the request on (a routed call is answered when
the plugin replies).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from kidecar_supervisor import __version__
from kidecar_supervisor.child import Child
from kidecar_supervisor.control_channel import ControlError
from kidecar_supervisor.protocol import (
    DEFAULT_TIMEOUT,
    PLUGIN_ACTIONS,
    ControlRequest,
    Op,
    fail,
    ok,
)
from kidecar_supervisor.router import Router
from kidecar_supervisor.states import ChildState, Mode

log = logging.getLogger("kidecar.control")

#: a routed call's answer may come this long after the asker gave up (then it is dropped)
_CALL_SLACK = 1.0


@dataclass
class PendingRequest:
    """One request a channel thread waits on until the main loop answers it."""

    message: ControlRequest
    done: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None

    def answer(self, reply: dict[str, Any]) -> None:
        self.reply = reply
        self.done.set()


class ControlInbox:
    """Hands requests from channel threads to the main loop (a queue and a wake-up pipe)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[PendingRequest] = queue.SimpleQueue()
        self.wake_fd, self._wake_w = os.pipe()
        os.set_blocking(self.wake_fd, False)
        os.set_blocking(self._wake_w, False)

    def submit(self, message: ControlRequest) -> dict[str, Any]:
        """Called by a channel thread: wait for the main loop's answer."""
        request = PendingRequest(message)
        self._queue.put(request)
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already
        timeout = float(message.get("timeout", DEFAULT_TIMEOUT))
        if not request.done.wait(timeout):
            raise ControlError(f"supervisor main loop did not answer within {timeout:g}s")
        assert request.reply is not None
        return request.reply

    def clear_wakeups(self) -> None:
        try:
            os.read(self.wake_fd, 4096)
        except BlockingIOError:
            pass

    def take(self, limit: int) -> Iterator[PendingRequest]:
        """Up to ``limit`` waiting requests (the loop's work per wake-up stays bounded)."""
        for _ in range(limit):
            try:
                yield self._queue.get_nowait()
            except queue.Empty:
                return

    def pending(self) -> bool:
        return not self._queue.empty()


class ControlHost(Protocol):
    """What the control table needs of the supervisor."""

    children: list[Child]
    shutting_down: bool
    mode: Mode
    started_at: float
    router: Router

    def child(self, name: str) -> Child | None: ...

    def clock(self) -> float: ...

    def sidecarset_version(self) -> int | None: ...

    def gauges(self) -> list[dict[str, Any]]: ...

    def operator_action(self, child: Child, op: Op) -> None: ...

    def http_serving(self, pid: int) -> None: ...

    def handed_over(self, peer: int) -> None: ...


class ControlTable:
    def __init__(self, host: ControlHost) -> None:
        self.host = host
        self.handlers: dict[str, Callable[[PendingRequest], None]] = {
            Op.HEALTH: self.health,
            Op.READY: self.ready,
            Op.PLUGINS: self.plugins,
            Op.PLUGIN: self.plugin_action,
            Op.METRICS: self.metrics,
            Op.CALL: self.call,
            Op.RESTART: self.plugin_action,
            Op.STOP: self.plugin_action,
            Op.START: self.plugin_action,
            Op.HTTP_SERVING: self.http_serving,
            Op.HANDED_OVER: self.handed_over,
        }

    def serve(self, request: PendingRequest) -> None:
        """Answer (or hand on) one request; a bad request never kills the loop."""
        op = request.message.get("op")
        handler = self.handlers.get(str(op))
        if handler is None:
            request.answer(fail(400, f"unknown op {op!r}"))
            return
        try:
            handler(request)
        except Exception as exc:  # noqa: BLE001 - a bad request must not kill the loop
            log.exception("control request %r failed", op)
            request.answer(fail(500, str(exc)))

    # -- probes -------------------------------------------------------------------
    def health(self, request: PendingRequest) -> None:
        host = self.host
        failed = [c.name for c in host.children if c.state == ChildState.FAILED]
        if host.shutting_down:
            request.answer(fail(503, "kidecar is shutting down"))
        elif failed:
            request.answer(fail(503, f"plugin(s) failed: {', '.join(failed)}", failed=failed))
        else:
            request.answer(dict(ok({
                "status": "ok", "version": __version__, "mode": host.mode.value,
                "sidecarsetVersion": host.sidecarset_version(),
                "uptime": round(host.clock() - host.started_at, 3)})))

    def ready(self, request: PendingRequest) -> None:
        host = self.host
        if host.mode != Mode.SERVING and not host.shutting_down:
            # the idle half of a hot upgrade must not make the pod unready
            request.answer(dict(ok({"status": "ready", "mode": host.mode.value})))
            return
        # every configured plugin counts, even one an operator stopped on purpose
        waiting = [c.name for c in host.children
                   if not (c.state == ChildState.RUNNING and c.ready)
                   and c.state != ChildState.COMPLETED and not c.recycling]
        if host.shutting_down or waiting:
            reason = "shutting down" if host.shutting_down else f"not ready: {', '.join(waiting)}"
            request.answer(fail(503, reason, waiting=waiting))
            return
        request.answer(dict(ok({"status": "ready"})))

    # -- views ----------------------------------------------------------------------
    def plugins(self, request: PendingRequest) -> None:
        now = self.host.clock()
        request.answer(dict(ok([c.snapshot(now) for c in self.host.children])))

    def metrics(self, request: PendingRequest) -> None:
        now = self.host.clock()
        request.answer(dict(ok({
            "uptime": now - self.host.started_at,
            "plugins": [c.snapshot(now) for c in self.host.children],
            "gauges": self.host.gauges(),
        })))

    # -- actions ----------------------------------------------------------------------
    def call(self, request: PendingRequest) -> None:
        message = request.message
        timeout = float(message.get("timeout", DEFAULT_TIMEOUT))
        self.host.router.from_control(
            request, str(message.get("target")), str(message.get("method")),
            message.get("params") or {}, self.host.clock() + timeout + _CALL_SLACK)

    def plugin_action(self, request: PendingRequest) -> None:
        """``plugin`` (show one) and the operator's ``restart``/``stop``/``start``."""
        op = Op(str(request.message.get("op")))
        name = str(request.message.get("name"))
        child = self.host.child(name)
        if child is None:
            request.answer(fail(404, f"unknown plugin {name!r}"))
            return
        if op in PLUGIN_ACTIONS:
            if self.host.shutting_down:
                request.answer(fail(503, "kidecar is shutting down"))
                return
            if child.internal and op != Op.RESTART:
                request.answer(fail(409, f"{name!r} is part of kidecar itself: it can be "
                                    "restarted, not stopped or started"))
                return
            self.host.operator_action(child, op)
        request.answer(dict(ok(child.snapshot(self.host.clock()))))

    def http_serving(self, request: PendingRequest) -> None:
        self.host.http_serving(int(request.message.get("pid", 0)))
        request.answer(dict(ok()))

    def handed_over(self, request: PendingRequest) -> None:
        self.host.handed_over(int(request.message.get("peer", 0)))
        request.answer(dict(ok()))
