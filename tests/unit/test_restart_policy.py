"""Restart decisions: pure logic, exact numbers."""

from __future__ import annotations

from kidecar_supervisor.config import RestartSettings
from kidecar_supervisor.restart_policy import RestartTracker


def tracker(**kw: object) -> RestartTracker:
    return RestartTracker(RestartSettings(**kw))  # type: ignore[arg-type]


def test_first_restart_is_immediate_then_backoff_doubles_up_to_the_cap() -> None:
    t = tracker(backoff_seconds=0.5, max_backoff_seconds=3, max_restarts=100)
    delays = [t.on_exit(now=i, exit_code=1, ran_for=0.1).delay for i in range(6)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0]


def test_healthy_running_resets_the_backoff() -> None:
    t = tracker(backoff_seconds=1, backoff_reset_seconds=60, max_restarts=100)
    t.on_exit(0, 1, 0.1)
    assert t.on_exit(1, 1, 0.1).delay == 1.0
    assert t.on_exit(100, 1, ran_for=61).delay == 0.0


def test_crash_loop_budget_fails_the_plugin() -> None:
    t = tracker(max_restarts=3, restart_window_seconds=60, backoff_seconds=0)
    decisions = [t.on_exit(i, 2, 0.1) for i in range(4)]
    assert [d.restart for d in decisions] == [True, True, True, False]
    assert decisions[-1].final_state == "Failed" and "crash loop" in decisions[-1].reason


def test_restarts_outside_the_window_do_not_count() -> None:
    t = tracker(max_restarts=2, restart_window_seconds=10, backoff_seconds=0)
    assert t.on_exit(0, 1, 0.1).restart and t.on_exit(1, 1, 0.1).restart
    assert t.on_exit(30, 1, 0.1).restart


def test_policies() -> None:
    assert not tracker(policy="Never").on_exit(0, 1, 1).restart
    assert tracker(policy="Never").on_exit(0, 1, 1).final_state == "Failed"
    assert tracker(policy="Never").on_exit(0, 0, 1).final_state == "Completed"
    on_failure = tracker(policy="OnFailure")
    assert on_failure.on_exit(0, 0, 1).final_state == "Completed"
    assert on_failure.on_exit(0, -9, 1).restart
    assert tracker(policy="Always").on_exit(0, 0, 1).restart


def test_reset_gives_a_fresh_budget() -> None:
    t = tracker(max_restarts=1, backoff_seconds=0)
    assert t.on_exit(0, 1, 0).restart
    assert not t.on_exit(0, 1, 0).restart
    t.reset()
    assert t.on_exit(0, 1, 0).restart
