"""``kidecar rollout``'s command line and its output (rollout/arguments.py, commands.py)."""

from __future__ import annotations

import io

import pytest

from kidecar_supervisor.cli import build_parser
from kidecar_supervisor.rollout import plan
from kidecar_supervisor.rollout.commands import (
    ProgressBar,
    bar,
    spec_from_args,
    status_document,
    summary_text,
)
from kidecar_supervisor.rollout.plan import PodEntry
from kidecar_supervisor.rollout.record import ABORTED, RolloutRecord
from kidecar_supervisor.rollout.spec import SpecError


def parse(*argv: str) -> object:
    return build_parser().parse_args(["rollout", *argv])


def test_the_issue_interface_parses_into_a_spec() -> None:
    args = parse("start", "r1", "-n", "game", "--gameserverset", "battle", "--version", "v2",
                 "--url", "https://cdn/x/pak", "--sha256", "ab", "--batch-size", "10%",
                 "--pause-seconds", "5", "--max-failures", "2", "--batch-timeout-seconds",
                 "60", "--idle-states", "None,Maintaining", "--idle-timeout-seconds", "99",
                 "--force", "--wait", "--kubeconfig", "/k")
    spec = spec_from_args(args)  # type: ignore[arg-type]
    assert spec.selector == "game.kruise.io/owner-gss=battle"
    assert spec.idle_states == ("None", "Maintaining") and spec.force
    assert (spec.batch_size, spec.pause_seconds, spec.max_failures) == ("10%", 5.0, 2)
    assert args.wait and args.kubeconfig == "/k"  # type: ignore[attr-defined]
    sel = spec_from_args(parse("start", "r2", "-n", "g", "--selector", "app=x", "--version",  # type: ignore[arg-type]
                               "v2", "--url", "http://h/f"))
    assert sel.selector == "app=x" and sel.batch_size == "25%"


def test_the_selection_is_one_of_gameserverset_or_selector_and_flags_are_checked() -> None:
    with pytest.raises(SystemExit):
        parse("start", "r1", "-n", "g", "--version", "v2", "--url", "http://h/f")
    with pytest.raises(SystemExit):
        parse("start", "r1", "-n", "g", "--gameserverset", "a", "--selector", "b=c",
              "--version", "v2", "--url", "http://h/f")
    with pytest.raises(SpecError, match="--batch-size"):
        spec_from_args(parse("start", "r1", "-n", "g", "--gameserverset", "a",  # type: ignore[arg-type]
                             "--version", "v2", "--url", "http://h/f", "--batch-size", "0%"))
    for action in ("status", "pause", "resume", "abort"):
        assert parse(action, "r1", "-n", "g").rollout_command == action  # type: ignore[attr-defined]
    assert parse("status", "r1", "-n", "g", "-o", "json").output == "json"  # type: ignore[attr-defined]


def aborted_record() -> RolloutRecord:
    args = parse("start", "r1", "-n", "g", "--gameserverset", "a", "--version", "v3",
                 "--url", "http://h/v3")
    record = RolloutRecord(spec=spec_from_args(args), phase=ABORTED, batch=1,  # type: ignore[arg-type]
                           message="1 failure(s), more than --max-failures 0")
    record.entries = {
        "a-0": PodEntry(plan.FAILED, 1, 0.0, "confirming failed: the game refused it",
                        {"version": "v1", "url": "u", "sha256": ""}),
        "a-1": PodEntry(plan.REVERTED, 1, 0.0, "", {"version": "v1", "url": "u", "sha256": ""}),
        "a-2": PodEntry(plan.SKIPPED, 0, 0.0, "not updated: the rollout aborted"),
    }
    return record


def test_status_names_failed_and_skipped_pods_with_their_reason() -> None:
    text = summary_text(aborted_record())
    assert "Aborted" in text and "0/3 done" in text
    assert "failed a-0: confirming failed: the game refused it" in text
    assert "skipped a-2: not updated: the rollout aborted" in text
    assert "batch 1: 1 failed, 1 reverted" in text
    doc = status_document(aborted_record())
    assert doc["counts"] == {"failed": 1, "reverted": 1, "skipped": 1}
    assert doc["batches"] == [{"batch": 1, "failed": 1, "reverted": 1}]
    assert doc["pods"]["a-0"]["previous"]["version"] == "v1"


def test_the_progress_bar_redraws_one_line_and_events_go_above_it() -> None:
    out = io.StringIO()
    progress = ProgressBar(out, width=10)
    record = aborted_record()
    record.entries["a-1"].state = plan.DONE
    progress.show(record)
    progress.say("batch 2: 1 pod(s)")
    progress.show(record)
    text = out.getvalue()
    assert text.count("\r[###-------] 1/3 done, 1 failed") == 2
    assert "\r\x1b[Kbatch 2: 1 pod(s)\n" in text
    assert bar(0, 4, 4) == "[----]" and bar(4, 4, 4) == "[####]"
