"""Kubelet-style success/failure thresholds over probe results (pure logic)."""

from __future__ import annotations

from workers.http_probe.prober import FAILED, ProbeResult, ThresholdTracker


def ok(state: str) -> ProbeResult:
    return ProbeResult(True, state)


BAD = ProbeResult(False, error="connection refused")


def feed(tracker: ThresholdTracker, *results: ProbeResult) -> list[bool]:
    return [tracker.observe(r) for r in results]


def test_success_threshold_one_applies_immediately() -> None:
    t = ThresholdTracker(1, 3, has_failed_policy=False)
    assert feed(t, ok("idle")) == [True]
    assert t.applied == t.marker_state == "idle"
    assert feed(t, ok("idle"), ok("idle")) == [False, False]


def test_new_state_needs_success_threshold_in_a_row() -> None:
    t = ThresholdTracker(3, 3, has_failed_policy=False)
    assert feed(t, ok("idle"), ok("idle"), ok("idle")) == [False, False, True]
    assert feed(t, ok("busy"), ok("busy")) == [False, False]
    assert t.marker_state == "idle"
    assert feed(t, ok("busy")) == [True]
    assert t.marker_state == "busy"


def test_one_odd_probe_does_not_flip() -> None:
    t = ThresholdTracker(2, 3, has_failed_policy=False)
    feed(t, ok("idle"), ok("idle"))
    changes = feed(t, ok("busy"), ok("idle"), ok("busy"), ok("idle"), ok("busy"), ok("idle"))
    assert not any(changes)
    assert t.marker_state == "idle"


def test_interrupted_run_restarts_the_count() -> None:
    t = ThresholdTracker(2, 3, has_failed_policy=False)
    feed(t, ok("idle"), ok("idle"))
    # busy, (failure), busy: not two in a row
    assert feed(t, ok("busy"), BAD, ok("busy")) == [False, False, False]
    assert t.marker_state == "idle"
    # busy, other, busy: not two in a row either
    assert feed(t, ok("other"), ok("busy")) == [False, False]
    assert feed(t, ok("busy")) == [True]


def test_failures_below_threshold_change_nothing() -> None:
    t = ThresholdTracker(1, 3, has_failed_policy=True)
    feed(t, ok("idle"))
    assert feed(t, BAD, BAD) == [False, False]
    assert t.applied == "idle" and t.consecutive_failures == 2
    assert feed(t, ok("idle")) == [False]
    assert t.consecutive_failures == 0
    assert feed(t, BAD, BAD) == [False, False]  # the count started over


def test_failure_threshold_applies_failed_when_a_policy_exists() -> None:
    t = ThresholdTracker(1, 3, has_failed_policy=True)
    feed(t, ok("idle"))
    assert feed(t, BAD, BAD, BAD) == [False, False, True]
    assert t.applied == t.marker_state == FAILED
    assert feed(t, BAD, BAD) == [False, False]  # stays failed, no repeated change
    assert feed(t, ok("idle")) == [True]
    assert t.marker_state == "idle"


def test_failure_without_failed_policy_leaves_markers() -> None:
    t = ThresholdTracker(1, 2, has_failed_policy=False)
    feed(t, ok("idle"))
    assert feed(t, BAD, BAD, BAD) == [False, False, False]
    assert t.applied == FAILED
    assert t.marker_state == "idle"
    # recovering to the same state: markers already right, no change
    assert feed(t, ok("idle")) == [False]
    assert t.applied == "idle"
    # recovering to another state is a change
    feed(t, BAD, BAD)
    assert feed(t, ok("busy")) == [True]


def test_recovery_from_failed_needs_success_threshold() -> None:
    t = ThresholdTracker(2, 1, has_failed_policy=True)
    feed(t, ok("idle"), ok("idle"))
    assert feed(t, BAD) == [True]
    assert feed(t, ok("idle")) == [False]
    assert t.marker_state == FAILED
    assert feed(t, ok("idle")) == [True]
    assert t.marker_state == "idle"


def test_nothing_applied_before_the_first_state() -> None:
    t = ThresholdTracker(1, 3, has_failed_policy=False)
    assert t.marker_state is None
    assert feed(t, BAD, BAD, BAD) == [False, False, False]
    assert t.applied == FAILED and t.marker_state is None
