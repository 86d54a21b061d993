"""``record_result``'s answer says which parts of a result were recorded (finding 9)."""

from __future__ import annotations

from kidecar_supervisor.storage.base import (
    JOURNALED,
    WRITTEN,
    partial_outcome,
    recorded_parts,
)


def test_written_and_journaled_mean_every_part_of_the_backend() -> None:
    assert recorded_parts(WRITTEN, "InKube") == {"pod": True, "store": True, "event": True}
    assert recorded_parts(JOURNALED, "InKube") == {"pod": True, "store": True, "event": True}
    assert recorded_parts(WRITTEN, "Local") == {"store": True}


def test_a_partial_outcome_names_each_part() -> None:
    outcome = partial_outcome({"pod": WRITTEN, "store": "refused: 422 data too long",
                               "event": JOURNALED})
    assert outcome.startswith("partial ")
    assert recorded_parts(outcome, "InKube") == {"pod": True, "store": False, "event": True}


def test_an_error_text_means_nothing_was_recorded() -> None:
    assert recorded_parts("database or disk is full", "Local") == {"store": False}
    assert recorded_parts("partial {broken", "InKube") == {
        "pod": False, "store": False, "event": False}
