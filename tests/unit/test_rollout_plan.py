"""The rollout's batch logic (kidecar_supervisor/rollout/plan.py, spec.py), pure."""

from __future__ import annotations

import json

import pytest

from kidecar_supervisor.rollout import plan
from kidecar_supervisor.rollout.plan import Observed, PodEntry
from kidecar_supervisor.rollout.record import RolloutRecord
from kidecar_supervisor.rollout.spec import RolloutSpec, SpecError


def spec(**kw: object) -> RolloutSpec:
    base: dict[str, object] = {"name": "r1", "namespace": "ns", "selector": "a=b",
                               "version": "v2", "url": "http://h/v2/f.json"}
    base.update(kw)
    return RolloutSpec(**base).validate()  # type: ignore[arg-type]


def result(version: str, success: bool = True, ts: float = 100.0,
           last_good: str | None = None) -> dict[str, object]:
    out: dict[str, object] = {"version": version, "success": success, "timestamp": ts,
                              "url": f"http://h/{version}/f.json", "message": "m"}
    if last_good:
        out["lastGood"] = {"version": last_good, "url": f"http://h/{last_good}/f.json"}
    return out


def fleet(n: int, version: str = "v1", **kw: object) -> list[Observed]:
    return [Observed(f"p{i:02d}", result=result(version), **kw) for i in range(n)]  # type: ignore[arg-type]


@pytest.mark.parametrize("size, total, expected", [
    ("25%", 20, 5), ("25%", 10, 3), ("1%", 3, 1), ("100%", 7, 7), ("4", 20, 4)])
def test_batch_count_of_a_count_or_a_percentage(size: str, total: int, expected: int) -> None:
    assert spec(batch_size=size).batch_count(total) == expected


@pytest.mark.parametrize("bad, field", [
    ({"batch_size": "0"}, "--batch-size"), ({"batch_size": "120%"}, "percentage"),
    ({"batch_size": "x"}, "--batch-size"), ({"url": "ftp://h/f"}, "--url"),
    ({"name": "Bad_Name"}, "NAME"), ({"max_failures": -1}, "--max-failures"),
    ({"batch_timeout_seconds": 0}, "--batch-timeout-seconds"), ({"selector": ""}, "selector")])
def test_bad_flags_are_named(bad: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError, match=field):
        spec(**bad)


def test_batches_take_idle_pods_in_name_order_and_remember_their_previous_version() -> None:
    s = spec(batch_size="25%")
    entries: dict[str, PodEntry] = {}
    pods = fleet(8)
    plan.adopt(entries, pods, s, 0.0)
    step = plan.next_batch(entries, {p.name: p for p in pods}, s, 1, 10.0)
    assert step.write == ["p00", "p01"]
    assert entries["p00"].state == plan.UPDATING and entries["p00"].batch == 1
    assert entries["p00"].previous == {"version": "v1", "url": "http://h/v1/f.json", "sha256": ""}
    assert plan.in_flight(entries) == ["p00", "p01"]


def test_a_batch_settles_on_confirmed_failed_and_silent_pods() -> None:
    s = spec(batch_size="3", batch_timeout_seconds=60)
    entries: dict[str, PodEntry] = {}
    pods = fleet(3)
    plan.adopt(entries, pods, s, 0.0)
    plan.next_batch(entries, {p.name: p for p in pods}, s, 1, 100.0)
    pods[0].result = result("v2", True, 105.0)
    pods[1].result = result("v2", False, 106.0, last_good="v1")  # rolled back
    by_name = {p.name: p for p in pods}
    plan.settle(entries, by_name, s, 110.0)
    assert [entries[n].state for n in ("p00", "p01", "p02")] == [plan.DONE, plan.FAILED,
                                                                 plan.UPDATING]
    plan.settle(entries, by_name, s, 161.0)
    assert entries["p02"].state == plan.FAILED and "no answer within 60s" in entries["p02"].reason
    assert plan.failures(entries) == 2 and plan.remaining(entries) == 0


def test_an_old_failure_of_the_same_version_is_not_this_rollouts_answer() -> None:
    assert plan.answer(result("v2", False, 10.0), "v2", 1000.0) == ("", "")
    assert plan.answer(result("v2", False, 990.0), "v2", 1000.0)[0] == plan.FAILED
    assert plan.answer(result("v1"), "v2", 0.0) == ("", "")


def test_busy_pods_are_deferred_then_updated_when_idle_or_skipped_after_the_timeout() -> None:
    s = spec(batch_size="100%", idle_timeout_seconds=50)
    entries: dict[str, PodEntry] = {}
    pods = fleet(2)
    pods[0].ops_state = "Allocated"
    plan.adopt(entries, pods, s, 0.0)
    by_name = {p.name: p for p in pods}
    assert plan.next_batch(entries, by_name, s, 1, 10.0).write == ["p01"]
    assert entries["p00"].state == plan.DEFERRED
    assert plan.next_batch(entries, by_name, s, 2, 30.0).write == []
    pods[0].ops_state = "None"
    assert plan.next_batch(entries, by_name, s, 2, 40.0).write == ["p00"]
    # another one stays busy past the deadline: skipped, or forced
    entries2: dict[str, PodEntry] = {}
    plan.adopt(entries2, [Observed("q", ops_state="Allocated")], s, 0.0)
    busy = {"q": Observed("q", ops_state="Allocated")}
    plan.next_batch(entries2, busy, s, 1, 0.0)
    plan.next_batch(entries2, busy, s, 1, 51.0)
    assert entries2["q"].state == plan.SKIPPED
    forced: dict[str, PodEntry] = {}
    plan.adopt(forced, [Observed("q", ops_state="Allocated")], spec(force=True,
               idle_timeout_seconds=50), 0.0)
    plan.next_batch(forced, busy, spec(force=True, idle_timeout_seconds=50), 1, 0.0)
    step = plan.next_batch(forced, busy, spec(force=True, idle_timeout_seconds=50), 1, 51.0)
    assert step.write == ["q"]


def test_pods_without_a_gameserver_count_as_idle_and_new_pods_on_the_version_are_done() -> None:
    s = spec()
    assert plan.is_idle(Observed("x", ops_state=None), s)
    assert not plan.is_idle(Observed("x", ops_state="Allocated"), s)
    assert plan.is_idle(Observed("x", ops_state="Maintaining"),
                        spec(idle_states=("None", "Maintaining")))
    entries: dict[str, PodEntry] = {}
    plan.adopt(entries, [Observed("new", result=result("v2"))], s, 0.0)
    assert entries["new"].state == plan.DONE and not entries["new"].written


def test_running_version_is_the_last_good_one_after_a_failure() -> None:
    assert plan.running_version(result("v3", False, last_good="v1"))["version"] == "v1"  # type: ignore[index]
    assert plan.running_version(result("v2"))["version"] == "v2"  # type: ignore[index]
    assert plan.running_version(None) is None
    assert plan.parse_result("not json") is None


def test_the_record_round_trips_through_a_configmap_and_stays_small() -> None:
    s = spec()
    record = RolloutRecord(spec=s, batch=2, control="pause")
    plan.adopt(record.entries, fleet(1000), s, 0.0)
    cm = record.to_configmap()
    assert cm["metadata"]["name"] == "kidecar-rollout-r1"
    back = RolloutRecord.from_configmap(cm)
    assert back.spec == s and back.batch == 2 and back.control == "pause"
    assert back.entries["p00"].previous == record.entries["p00"].previous
    size = sum(len(v) for v in cm["data"].values())
    assert size / 1000 < 130, size  # ~8,000 pods fit in one ConfigMap (1 MiB)
    assert json.loads(cm["data"]["spec"])["version"] == "v2"


def test_pods_deleted_before_they_were_done_leave_the_rollout() -> None:
    s = spec(batch_size="1")
    entries: dict[str, PodEntry] = {}
    pods = fleet(3)
    plan.adopt(entries, pods, s, 0.0)
    by_name = {p.name: p for p in pods}
    plan.next_batch(entries, by_name, s, 1, 0.0)
    pods[0].result = result("v2")
    plan.settle(entries, by_name, s, 1.0)
    plan.next_batch(entries, by_name, s, 2, 2.0)  # p01 updating, p02 pending
    left = {"p00": by_name["p00"]}
    events = plan.forget_gone(entries, left)
    assert events == ["pod p01: gone, no longer part of the rollout",
                      "pod p02: gone, no longer part of the rollout"]
    assert list(entries) == ["p00"] and plan.remaining(entries) == 0
    assert plan.failures(entries) == 0
