"""Calls between the HTTP layer, plugins and storage, routed by the supervisor.

A call comes from a control request (``POST /hot-update`` → ``hot_update``) or
from a child (a plugin's ``RemoteStore`` → ``storage``). The router gives it a
fresh id on the target's pipe, remembers where the answer goes (a
``ReplyTarget``), and delivers the target's reply there. A call to a child
that is (re)starting waits for it (a result must not be lost because the
store restarts) up to its deadline; a call to one that will not
come back fails at once with 503. Every call is answered exactly once: by the
target, or 503 when it exits, or 504 at its deadline.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from kidecar_supervisor.child import Child
from kidecar_supervisor.protocol import (
    STORAGE,
    Call,
    PipeMessage,
    Reply,
    reply_as,
    reply_error,
    reply_from_call,
)
from kidecar_supervisor.protocol import call as call_message
from kidecar_supervisor.states import ChildKind, ChildState

log = logging.getLogger("kidecar.router")

#: calls to a child that is (re)starting wait for it, up to this many
MAX_QUEUED_CALLS = 1000
#: a plugin's call to another child (e.g. a storage write) is forgotten after this long
CHILD_CALL_TTL = 300.0


def call_target(children: Iterable[Child], name: str) -> Child | None:
    """Who answers calls to ``name``: the store runs in the HTTP child that serves, and
    the HTTP child is no call target by its own name (it holds no plugin)."""
    if name == STORAGE:
        return next((c for c in children if c.kind == ChildKind.HTTP), None)
    child = next((c for c in children if c.name == name), None)
    return child if child is not None and child.kind != ChildKind.HTTP else None


class Answerable(Protocol):
    """A waiting control request (``control.PendingRequest``)."""

    def answer(self, reply: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class ToControl:
    """The answer goes back over the control channel (HTTP worker, CLI)."""

    request: Answerable


@dataclass(frozen=True)
class ToChild:
    """The answer goes to the child that asked, under *its* call id: only to the very
    process that asked (a restarted one reuses call ids)."""

    name: str
    call_id: int
    pid: int


ReplyTarget = ToControl | ToChild


@dataclass
class _Pending:
    target: str
    method: str
    params: dict[str, Any]
    reply_to: ReplyTarget
    deadline: float
    #: the pid of the process it was sent to (0: not sent yet)
    sent_to: int = 0


class RouterHost(Protocol):
    def child(self, name: str) -> Child | None: ...

    def call_target(self, name: str) -> Child | None:
        """The child that answers calls to ``name`` (``storage``: the HTTP child)."""
        ...

    def send(self, child: Child, message: PipeMessage) -> bool: ...

    def restarts_allowed(self) -> bool:
        """False while shutting down or handing over: nothing comes back."""
        ...


class Router:
    def __init__(self, host: RouterHost, max_queued: int = MAX_QUEUED_CALLS) -> None:
        self.host = host
        self.max_queued = max_queued
        self._ids = itertools.count(1)
        #: calls sent and not answered yet: our id -> the call
        self.in_flight: dict[int, _Pending] = {}
        #: calls waiting for their (re)starting target, by target name
        self.queued: dict[str, list[_Pending]] = {}

    # -- in ------------------------------------------------------------------------
    def from_control(self, request: Answerable, target: str, method: str,
                     params: dict[str, Any], deadline: float) -> None:
        self.forward(_Pending(target, method, params, ToControl(request), deadline))

    def from_child(self, source: Child, message: Call, now: float) -> None:
        reply_to = ToChild(source.name, int(message.get("id", 0)), source.pid)
        self.forward(_Pending(str(message.get("target")), str(message.get("method")),
                              message.get("params") or {}, reply_to, now + CHILD_CALL_TTL))

    def notify(self, target: Child, method: str, params: dict[str, Any]) -> None:
        """Fire and forget (id 0: its reply matches no route)."""
        self.host.send(target, call_message(0, method, params))

    def forward(self, pending: _Pending) -> None:
        target = self.host.call_target(pending.target)
        if target is None or not target.callable:
            self.fail(pending.reply_to, 404, f"plugin {pending.target!r} is not configured")
            return
        if target.conn is not None and target.state == ChildState.RUNNING and not target.recycling:
            self._dispatch(target, pending)
            return
        queue = self.queued.setdefault(target.name, [])
        if self._coming_back(target) and len(queue) < self.max_queued:
            queue.append(pending)
            return
        self.fail(pending.reply_to, 503,
                  f"plugin {target.name!r} is not running (state {target.state})")

    def waits_on(self, child: Child) -> bool:
        """A call sent to this process of ``child`` is not answered yet."""
        return any(p.sent_to == child.pid for p in self.in_flight.values())

    def _coming_back(self, child: Child) -> bool:
        if not self.host.restarts_allowed() or not child.wanted:
            return False
        return child.recycling or child.state in (
            ChildState.PENDING, ChildState.STARTING, ChildState.BACKOFF) or (
            child.state == ChildState.STOPPING and child.restart_after_stop)

    def _dispatch(self, target: Child, pending: _Pending) -> None:
        call_id = next(self._ids)
        pending.sent_to = target.pid
        self.in_flight[call_id] = pending
        if not self.host.send(target, call_message(call_id, pending.method, pending.params)):
            self.in_flight.pop(call_id, None)
            self.fail(pending.reply_to, 503, f"plugin {target.name!r} is not answering")

    # -- out -----------------------------------------------------------------------
    def on_reply(self, message: Reply) -> None:
        pending = self.in_flight.pop(int(message.get("id", -1)), None)
        if pending is not None:
            self.deliver(pending.reply_to, message)

    def fail(self, reply_to: ReplyTarget, status: int, message: str) -> None:
        self.deliver(reply_to, reply_error(0, status, message))

    def deliver(self, reply_to: ReplyTarget, reply: Reply) -> None:
        if isinstance(reply_to, ToControl):
            reply_to.request.answer(reply_from_call(reply))
            return
        target = self.host.child(reply_to.name)
        if target is not None and target.conn is not None and target.pid == reply_to.pid:
            self.host.send(target, reply_as(reply_to.call_id, reply))

    # -- a target's life -------------------------------------------------------------
    def on_running(self, child: Child) -> None:
        """The target runs: calls that waited for it go now."""
        for pending in self.queued.pop(child.name, []):
            self.forward(pending)

    def on_settled(self, child: Child, reason: str) -> None:
        """The target will not come back: calls waiting for it fail."""
        self.fail_queued(child.name, reason)

    def fail_queued(self, name: str, reason: str) -> None:
        for pending in self.queued.pop(name, []):
            self.fail(pending.reply_to, 503, reason)

    def fail_all_queued(self, reason: str) -> None:
        for name in list(self.queued):
            self.fail_queued(name, reason)

    def on_pipe_closed(self, child: Child) -> None:
        """Calls sent to a process that is gone are answered 503, never left hanging
        (only that process's: during a gapless HTTP restart two serve the store)."""
        for call_id, pending in list(self.in_flight.items()):
            if pending.sent_to == child.pid:
                del self.in_flight[call_id]
                self.fail(pending.reply_to, 503, f"plugin {pending.target!r} exited")

    def expire(self, now: float) -> None:
        """504 for calls past their deadline, sent or still waiting."""
        for call_id, pending in list(self.in_flight.items()):
            if now > pending.deadline:
                del self.in_flight[call_id]
                self.fail(pending.reply_to, 504, f"plugin {pending.target!r} did not answer "
                          "in time")
        for name, queue in list(self.queued.items()):
            late = [p for p in queue if now > p.deadline]
            if not late:
                continue
            self.queued[name] = [p for p in queue if now <= p.deadline]
            for pending in late:
                self.fail(pending.reply_to, 504, f"plugin {name!r} did not start in time")

