"""Restart of the HTTP child without a gap: the new one serves before the old one stops
(HTTP and its store both: the old store is told to stop with it)."""

from __future__ import annotations

import signal

from kidecar_supervisor.child import Child
from kidecar_supervisor.config import SidecarConfig
from kidecar_supervisor.http_child import HttpChild
from kidecar_supervisor.protocol import started
from kidecar_supervisor.states import ChildState
from tests.support.child_fakes import FakeOps


def setup() -> tuple[HttpChild, list[Child], FakeOps]:
    ops = FakeOps()
    http = HttpChild(SidecarConfig(plugins=()), shutdown_grace=25.0, listener=lambda: None)
    current = http.new_child(ops)
    current.start()
    current.on_message(started("1"))  # its store runs
    http.serving([current], current.pid)
    return http, [current], ops


def exit_of(child: Child, code: int) -> None:
    child.on_exit(code, may_restart=True)


def test_the_old_worker_serves_until_the_new_one_does() -> None:
    http, children, ops = setup()
    old = children[0]
    http.restart(old)
    new = http.successor
    assert new is not None and new.pid != old.pid and new.restarts == old.restarts + 1
    assert old.state == ChildState.RUNNING and ops.signals == []  # untouched so far
    http.restart(old)  # a second request while one is under way changes nothing
    assert http.successor is new
    http.serving(children, new.pid)
    assert children == [new] and new.ready and http.successor is None
    assert old.state == ChildState.STOPPING and (old.pid, signal.SIGTERM) in ops.signals
    assert ops.sent == [("http", {"t": "stop", "grace": 26.0})]  # its store stops too
    assert old.stop_deadline == ops.now + 26.0  # gunicorn's graceful timeout + 1
    assert http.exited(children, old, 0, exit_of)
    assert old.state == ChildState.STOPPED and http.retiring == [] and http.extra() == []


def test_a_new_worker_that_dies_before_serving_leaves_the_old_one() -> None:
    http, children, ops = setup()
    old = children[0]
    http.restart(old)
    new = http.successor
    assert new is not None
    new_pid = new.pid
    assert http.exited(children, new, 1, exit_of)
    assert new.state == ChildState.STOPPED and http.successor is None
    assert children == [old] and old.state == ChildState.RUNNING
    assert all(pid == new_pid for pid, _ in ops.signals)  # the old one was never signalled


def test_the_old_worker_dying_meanwhile_hands_over_to_the_new_one() -> None:
    http, children, _ = setup()
    old = children[0]
    http.restart(old)
    new = http.successor
    assert http.exited(children, old, -9, exit_of)
    assert children == [new] and old.state == ChildState.STOPPED and http.retiring == []
    http.serving(children, new.pid)  # it reports serving later: now it is the current one
    assert new is not None and new.ready


def test_other_exits_are_not_its_business() -> None:
    http, children, _ = setup()
    assert not http.exited(children, children[0], 0, exit_of)
    assert children[0].state == ChildState.RUNNING
