"""Every move of a child's life, with a fake ChildOps: no process is forked."""

from __future__ import annotations

import itertools
import signal
from typing import Any

import pytest

from kidecar_supervisor.child import Child
from kidecar_supervisor.config import RestartSettings
from kidecar_supervisor.protocol import error_report, heartbeat, ready, started
from kidecar_supervisor.states import (
    TRANSITIONS,
    ChildKind,
    ChildState,
    IllegalTransition,
    check_transition,
)
from tests.support.child_fakes import FakeOps

S = ChildState


def make(kind: ChildKind = ChildKind.PLUGIN, **restart: Any) -> tuple[Child, FakeOps]:
    ops = FakeOps()
    settings = RestartSettings(**{"backoff_seconds": 0.5, "max_restarts": 3,
                                  "restart_window_seconds": 60.0, **restart})
    return Child("p", kind, settings, ops), ops


def running(kind: ChildKind = ChildKind.PLUGIN, **restart: Any) -> tuple[Child, FakeOps]:
    child, ops = make(kind, **restart)
    child.start()
    if kind in (ChildKind.PLUGIN, ChildKind.HTTP):
        child.on_message(started("1.0"))
    assert child.state == S.RUNNING
    return child, ops


# -- the table itself -------------------------------------------------------------

@pytest.mark.parametrize(("current", "new"), list(itertools.product(S, S)))
def test_every_pair_is_either_legal_or_raises(current: ChildState, new: ChildState) -> None:
    if new in TRANSITIONS[current]:
        check_transition("p", current, new)
    else:
        with pytest.raises(IllegalTransition, match=f"{current} -> {new}"):
            check_transition("p", current, new)


def test_a_child_never_jumps_from_nothing_to_stopping_or_running_to_pending() -> None:
    assert S.STOPPING not in TRANSITIONS[S.PENDING]
    assert S.STOPPING not in TRANSITIONS[S.STOPPED]
    assert S.COMPLETED not in TRANSITIONS[S.PENDING]
    assert S.RUNNING not in TRANSITIONS[S.STOPPING]


# -- start -----------------------------------------------------------------------------

def test_a_plugin_starts_then_runs_on_its_started_message() -> None:
    child, ops = make()
    child.start()
    assert (child.state, child.pid, child.ready, ops.forks) == (S.STARTING, 101, False, 1)
    child.on_message(started("2.0"))
    assert child.state == S.RUNNING and child.version == "2.0" and ops.ran == ["p"]
    assert not child.ready
    child.on_message(ready(True))
    assert child.ready


def test_a_started_message_outside_starting_changes_nothing() -> None:
    child, ops = running()
    child.on_message(started("9"))
    assert child.state == S.RUNNING and ops.ran == ["p"]


def test_a_binary_runs_and_is_ready_at_once() -> None:
    child, ops = make(ChildKind.BINARY)
    child.start()
    assert (child.state, child.ready, child.output_fd, ops.spawns) == (S.RUNNING, True, 42, 1)


def test_http_runs_once_its_store_does_and_is_ready_when_it_serves() -> None:
    child, ops = make(ChildKind.HTTP)
    child.start()
    assert child.state == S.STARTING and not child.ready
    child.on_message(started("1.0"))
    assert child.state == S.RUNNING and ops.ran == [child.name] and not child.ready
    child.mark_serving()
    assert child.ready


@pytest.mark.parametrize("state", [S.STARTING, S.RUNNING, S.STOPPING])
def test_starting_a_live_child_is_illegal(state: ChildState) -> None:
    child, _ = running()
    child.state = state
    with pytest.raises(IllegalTransition):
        child.start()


def test_a_start_that_fails_is_retried_at_once_then_backs_off() -> None:
    child, ops = make()
    ops.fail_start = 2
    child.start()
    assert child.state == S.BACKOFF and child.pid == 0
    assert child.restarts == 2 and child.last_exit is None
    assert "cannot start" in child.last_error
    assert child.next_start_at == pytest.approx(ops.now + 0.5)
    ops.now += 0.6
    child.tick(ops.now, may_start=True)
    assert child.state == S.STARTING and child.pid == 101


def test_a_start_that_keeps_failing_ends_failed_and_settles() -> None:
    child, ops = make(max_restarts=1, backoff_seconds=0)
    ops.fail_start = 10
    child.start()
    assert child.state == S.FAILED
    assert ops.settled_with == [("p", S.FAILED, "plugin 'p' is Failed")]


# -- exits ---------------------------------------------------------------------------------

def test_first_crash_restarts_at_once_and_kills_what_it_left() -> None:
    child, ops = running()
    child.on_exit(3, may_restart=True)
    assert (101, signal.SIGKILL) in ops.signals
    assert child.state == S.STARTING and child.pid == 102
    assert child.restarts == 1 and child.last_error == "exit code 3" and child.last_exit is None


def test_a_second_crash_waits_out_the_backoff() -> None:
    child, ops = running()
    child.on_exit(1, may_restart=True)
    child.on_message(started("1"))
    child.on_exit(-9, may_restart=True)
    assert child.state == S.BACKOFF and child.last_error == "killed by SIGKILL"
    child.tick(ops.now + 0.4, may_start=True)
    assert child.state == S.BACKOFF
    child.tick(ops.now + 0.5, may_start=True)
    assert child.state == S.STARTING


def test_a_due_restart_during_shutdown_does_not_start() -> None:
    child, ops = running()
    child.on_exit(1, may_restart=True)
    child.on_message(started("1"))
    child.on_exit(1, may_restart=True)
    child.tick(ops.now + 1, may_start=False)
    assert child.state == S.BACKOFF and child.pid == 0


def test_crash_loop_budget_fails_and_settles() -> None:
    child, ops = running(backoff_seconds=0, max_restarts=2)
    for _ in range(2):
        child.on_exit(2, may_restart=True)
        child.on_message(started("1"))
    child.on_exit(2, may_restart=True)
    assert child.state == S.FAILED and "crash loop" in child.last_error
    assert ops.settled_with == [("p", S.FAILED, "plugin 'p' is Failed")]


def test_never_policy_completes_or_fails() -> None:
    child, _ = running(policy="Never")
    child.on_exit(0, may_restart=True)
    assert child.state == S.COMPLETED
    child, _ = running(policy="Never")
    child.on_exit(1, may_restart=True)
    assert child.state == S.FAILED and child.restarts == 0


def test_on_failure_policy_completes_on_a_clean_exit() -> None:
    child, ops = running(policy="OnFailure")
    child.on_exit(0, may_restart=True)
    assert child.state == S.COMPLETED and ops.settled_with[-1][1] == S.COMPLETED


def test_an_exit_while_restarts_are_not_allowed_is_stopped() -> None:
    child, ops = running()
    child.on_exit(0, may_restart=False)
    assert child.state == S.STOPPED and ops.settled_with == [("p", S.STOPPED,
                                                              "plugin 'p' stopped")]


def test_the_reported_error_wins_over_the_exit_code() -> None:
    child, _ = make()
    child.start()
    child.on_message(error_report("init failed: no such directory"))
    child.on_exit(78, may_restart=True)
    assert child.last_error == "init failed: no such directory"


def test_an_exit_without_a_process_is_illegal() -> None:
    child, _ = make()
    with pytest.raises(IllegalTransition):
        child.on_exit(0, may_restart=True)


# -- stopping --------------------------------------------------------------------------------

def test_stop_asks_then_kills_after_the_grace() -> None:
    child, ops = running()
    child.stop(grace=3.0)
    assert child.state == S.STOPPING
    assert ("p", {"t": "stop", "grace": 3.0}) in ops.sent
    assert ops.signals == [(101, signal.SIGTERM)]
    child.tick(ops.now + 2.9, may_start=True)
    assert ops.signals == [(101, signal.SIGTERM)]
    child.tick(ops.now + 3.0, may_start=True)
    assert ops.signals[-1] == (101, signal.SIGKILL) and child.stop_deadline is None


def test_a_binary_is_stopped_by_signal_only() -> None:
    child, ops = running(ChildKind.BINARY)
    child.stop(grace=1.0)
    assert ops.sent == [] and ops.signals == [(101, signal.SIGTERM)]


def test_stopping_a_child_without_a_process_does_nothing() -> None:
    child, ops = make()
    child.stop(grace=1.0)
    assert child.state == S.PENDING and ops.signals == []


def test_kill_hung_kills_and_its_policy_restarts_it_keeping_the_reason() -> None:
    child, ops = running()
    child.kill_hung("no heartbeat for 31.0s")
    assert child.state == S.STOPPING and ops.signals == [(101, signal.SIGKILL)]
    child.on_exit(-9, may_restart=True)
    assert child.state == S.STARTING and child.last_error == "hung: no heartbeat for 31.0s"


def test_kill_hung_of_a_child_without_a_process_does_nothing() -> None:
    child, ops = make()
    child.kill_hung("x")
    assert child.state == S.PENDING and ops.signals == [] and child.last_error == ""


def test_a_silent_plugin_is_judged_hung() -> None:
    child, ops = running(heartbeat_timeout_seconds=5)
    child.tick(ops.now + 4, may_start=True)
    assert child.state == S.RUNNING
    child.on_message(heartbeat({"n": 1}, "1.1"))
    assert child.infos == {"n": 1} and child.version == "1.1"
    child.tick(ops.now + 5.5, may_start=True)
    assert child.state == S.STOPPING and "no heartbeat" in child.last_error


def test_a_plugin_stuck_in_init_is_judged_hung() -> None:
    child, ops = make(start_timeout_seconds=2)
    child.start()
    child.tick(ops.now + 2.5, may_start=True)
    assert child.state == S.STOPPING and "init() did not finish within 2s" in child.last_error


def test_binaries_have_no_heartbeat() -> None:
    child, ops = running(ChildKind.BINARY, heartbeat_timeout_seconds=1)
    child.tick(ops.now + 100, may_start=True)
    assert child.state == S.RUNNING


@pytest.mark.parametrize("serving", [False, True])
def test_a_silent_http_child_is_hung_whether_it_serves_or_not(serving: bool) -> None:
    """Its store beats always, and while it serves only if its poller turns too."""
    child, ops = running(ChildKind.HTTP, heartbeat_timeout_seconds=6)
    if serving:
        child.mark_serving()
    child.tick(ops.now + 5, may_start=True)
    assert child.state == S.RUNNING
    child.tick(ops.now + 7, may_start=True)
    assert child.state == S.STOPPING
    assert child.last_error == "hung: the HTTP worker sent no heartbeat for 7.0s"


# -- operator actions and shutdown --------------------------------------------------------------

def test_restart_of_a_live_child_stops_then_starts_it_outside_its_budget() -> None:
    child, ops = running(max_restarts=0)
    child.restart_now(grace=5)
    assert child.state == S.STOPPING and child.restart_after_stop
    child.on_exit(-15, may_restart=True)
    assert child.state == S.STARTING and child.restarts == 1 and child.pid == 102


def test_restart_of_a_failed_child_starts_it() -> None:
    child, _ = running(policy="Never")
    child.on_exit(1, may_restart=True)
    child.restart_now(grace=5)
    assert child.state == S.STARTING and child.restarts == 1


def test_disable_stops_for_good() -> None:
    child, ops = running()
    child.disable(grace=5)
    child.on_exit(-15, may_restart=True)
    assert child.state == S.STOPPED and child.pid == 0
    child.tick(ops.now + 100, may_start=True)
    assert child.state == S.STOPPED


def test_disable_during_backoff_cancels_the_restart() -> None:
    child, ops = running()
    child.on_exit(1, may_restart=True)
    child.on_message(started("1"))
    child.on_exit(1, may_restart=True)
    child.disable(grace=5)
    assert child.state == S.STOPPED and child.next_start_at is None
    assert ops.settled_with[-1] == ("p", S.STOPPED, "plugin 'p' stopped")


def test_enable_starts_a_stopped_or_completed_child_with_a_fresh_budget() -> None:
    child, _ = running(backoff_seconds=0, max_restarts=1)
    child.disable(grace=1)
    child.on_exit(0, may_restart=True)
    child.enable()
    assert child.state == S.STARTING and child.wanted
    child.on_message(started("1"))
    child.on_exit(1, may_restart=True)  # the budget is fresh: restarted at once
    assert child.state == S.STARTING


def test_enable_of_a_running_child_changes_nothing() -> None:
    child, ops = running()
    child.enable()
    assert child.state == S.RUNNING and ops.forks == 1


def test_stand_down_settles_what_is_not_running_and_leaves_the_rest() -> None:
    waiting, ops = running()
    waiting.on_exit(1, may_restart=True)
    waiting.on_message(started("1"))
    waiting.on_exit(1, may_restart=True)
    assert waiting.state == S.BACKOFF
    waiting.stand_down(for_good=False)
    assert waiting.state == S.STOPPED and waiting.wanted
    alive, _ = running()
    alive.stand_down(for_good=True)
    assert alive.state == S.RUNNING and not alive.wanted


def test_snapshot_shows_plain_strings() -> None:
    child, ops = running(ChildKind.BINARY)
    row = child.snapshot(ops.now + 2)
    assert row["state"] == "Running" and type(row["state"]) is str
    assert row["kind"] == "binary" and row["uptime"] == 2.0 and row["pid"] == 101


def test_uptime_is_never_negative_when_the_child_started_after_now_was_read() -> None:
    """Issue 17 finding 9: a crash loop showed ``uptime: -0.001``."""
    child, ops = running(ChildKind.BINARY)
    assert child.snapshot(ops.now - 0.001)["uptime"] == 0.0


# -- recycling (a plugin, idle, asks for a fresh process: issue 16) -------------------

def test_a_recycle_stops_then_starts_a_fresh_process_without_counting_a_restart() -> None:
    child, ops = running()
    child.ready = True
    child.recycle(grace=3.0, reason="update settled")
    assert child.state == S.STOPPING and ("p", {"t": "stop", "grace": 3.0}) in ops.sent
    assert child.recycling  # /readyz counts it ready meanwhile
    child.on_exit(0, may_restart=True)
    assert child.state == S.STARTING and child.pid == 102 and ops.forks == 2
    assert child.recycles == 1 and child.restarts == 0 and child.recycling
    child.on_message(started("1.0"))
    assert child.recycling  # running, not restored yet: calls wait, /readyz as before
    child.on_message(ready(True))
    assert not child.recycling and child.ready
    assert child.snapshot(ops.now)["recycles"] == 1


def test_a_fresh_process_that_reports_unready_ends_the_recycle_unready() -> None:
    child, ops = running()
    child.recycle(grace=3.0, reason="update settled")
    child.on_exit(0, may_restart=True)
    child.on_message(started("1.0"))
    child.on_message(ready(False))  # e.g. what it restored is unconfirmed
    assert not child.recycling and not child.ready


def test_a_recycle_that_ends_in_a_crash_counts_as_a_restart() -> None:
    child, ops = running()
    child.recycle(grace=3.0, reason="update settled")
    child.on_exit(3, may_restart=True)
    assert child.state == S.STARTING and child.restarts == 1 and child.recycles == 0
    assert not child.recycling


def test_the_fresh_process_of_a_recycle_crashing_before_ready_stops_counting_as_ready() -> None:
    child, ops = running()
    child.recycle(grace=3.0, reason="update settled")
    child.on_exit(0, may_restart=True)
    assert child.recycling
    child.on_exit(1, may_restart=True)
    assert not child.recycling and child.restarts == 1


def test_a_recycle_during_shutdown_leaves_it_stopped() -> None:
    child, ops = running()
    child.recycle(grace=3.0, reason="update settled")
    child.on_exit(0, may_restart=False)
    assert child.state == S.STOPPED and not child.recycling and child.recycles == 0
