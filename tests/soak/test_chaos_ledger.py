"""The soak's rule for which versions the end state may show (pure logic, no processes)."""

from __future__ import annotations

from typing import Any

from tests.support.chaos_ledger import Ledger, Request


def _req(ledger: Ledger, version: str, sent: float, status: int | None,
         outcome: str = "", **body: Any) -> None:
    """One answered request; ``body`` is the JSON the sidecar answered."""
    ledger.add(Request(kind="good", version=version, sent=sent, answered=sent + 1,
                       status=status, outcome=outcome, body=body))


def test_the_last_200_is_the_only_allowed_version_after_definite_answers() -> None:
    ledger = Ledger()
    _req(ledger, "v1", 1, 200, "succeeded")
    _req(ledger, "v2", 3, 200, "succeeded")
    _req(ledger, "v3", 5, 424, "rolledBack")
    _req(ledger, "v4", 7, 500, "failed")
    _req(ledger, "v5", 9, 422)
    assert ledger.allowed_final_versions() == ("v2", {"v2"})
    assert ledger.refused_versions() == {"v3", "v4", "v5"}


def test_an_unanswered_request_after_the_last_200_may_have_won() -> None:
    ledger = Ledger()
    _req(ledger, "v1", 1, 200, "succeeded")
    _req(ledger, "v0", 0.5, None, "ConnectionError")  # sent before v1: v1 came after it
    _req(ledger, "v2", 3, None, "ConnectionError")    # the supervisor was SIGKILLed
    _req(ledger, "v3", 4, 503)                        # the plugin was restarting
    assert ledger.allowed_final_versions() == ("v1", {"v1", "v2", "v3"})


def test_a_500_without_the_failed_outcome_is_not_a_refusal() -> None:
    ledger = Ledger()
    _req(ledger, "v1", 1, 200, "succeeded")
    _req(ledger, "v2", 2, 500, "")  # an internal error: the update may still have happened
    assert ledger.allowed_final_versions()[1] == {"v1", "v2"}


def test_the_table_counts_faults_requests_and_violations() -> None:
    ledger = Ledger()
    _req(ledger, "v1", 1, 200, "succeeded", joined=True)
    ledger.fault("kill-http")
    ledger.violation("journal not empty")
    table = ledger.table(seed=7, minutes=3, extra={"kidecar starts": 1})
    assert "seed=7" in table
    assert "| fault      | kill-http   " in table
    assert "good: 200 succeeded joined" in table
    assert "invariant violations (must be 0) |     1 |" in table
    assert "VIOLATION: journal not empty" in table
