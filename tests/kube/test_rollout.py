"""``kidecar rollout`` over 20 real sidecars in one namespace (issue 11 §2).

Two GameServerSets, A (12 pods) and B (8 pods), each pod with its own pod
object, GameServer object, fake game and real ``kidecar run``, all shared by
the scenarios of this module (module fixture, started in parallel), in this
order: A rolls out to v2 in batches of 25 % while B is untouched; new pods of
both sets start on their set's version (A's v2 after its first batch, B's v1);
then B rolls out v3, which its games refuse, with --max-failures 0: the
rollout aborts, every pod it changed is back on v1 and the driver exits 1
naming the failed pods and why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kube.rollout_fleet import Fleet, Member, running_fleet, uid, wait_until

pytestmark = [pytest.mark.kube, pytest.mark.slow]


class Sets:
    def __init__(self, fleet: Fleet, a: list[Member], b: list[Member]) -> None:
        self.fleet = fleet
        self.a = a
        self.b = b


@pytest.fixture(scope="module")
def sets(kube_env: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sets]:
    with running_fleet(kube_env, tmp_path_factory.mktemp("rollout")) as fleet:
        a_name, b_name = uid("gssa"), uid("gssb")
        yield Sets(fleet, fleet.create(a_name, 12), fleet.create(b_name, 8))


def test_a_gameserverset_rolls_out_in_batches_and_the_other_is_untouched(sets: Sets) -> None:
    fleet = sets.fleet
    b_before = {m.name: (m.loads(), fleet.desired_of(m.name)) for m in sets.b}
    a_hups = {m.name: m.loads() for m in sets.a}
    code, out = fleet.rollout_ok("start", "ra", "--gameserverset", sets.a[0].gss,
                                 "--version", "v2", "--url", fleet.urls["v2"],
                                 "--batch-size", "25%", "--batch-timeout-seconds", "60")
    assert code == 0, out
    assert "Succeeded" in out and "12/12 done" in out
    for member in sets.a:
        assert member.version() == "v2", member.name
        assert member.loads() == a_hups[member.name] + 1, f"{member.name} updated once"
        assert fleet.result(member.name)["version"] == "v2"
    for member in sets.b:
        assert member.version() == "v1"
        assert (member.loads(), fleet.desired_of(member.name)) == b_before[member.name]
    status = fleet.rollout_ok("status", "ra", "-o", "json")
    doc = json.loads(status[1])
    assert doc["status"]["phase"] == "Succeeded"
    assert [b["batch"] for b in doc["batches"]] == [1, 2, 3, 4]  # 12 pods, 25 %: 3 a batch
    assert all(b.get("done") == 3 for b in doc["batches"])
    assert doc["pods"][sets.a[0].name]["previous"]["version"] == "v1"


def test_new_pods_start_on_their_sets_version(sets: Sets) -> None:
    fleet = sets.fleet
    # made by the set's controller from its template: no desired version on the pod
    new_a = fleet.create(sets.a[0].gss, 1, version="v2", first=12, desired=False)[0]
    new_b = fleet.create(sets.b[0].gss, 1, version="v1", first=8, desired=False)[0]
    assert new_a.version() == "v2" and new_b.version() == "v1"
    sets.a.append(new_a)
    sets.b.append(new_b)


def test_a_refused_version_aborts_and_every_changed_pod_goes_back(sets: Sets) -> None:
    fleet = sets.fleet
    code, out = fleet.rollout_ok("start", "rb", "--gameserverset", sets.b[0].gss,
                                 "--version", "v3", "--url", fleet.urls["v3"],
                                 "--batch-size", "25%", "--max-failures", "0",
                                 "--batch-timeout-seconds", "60")
    assert code == 1, out
    assert "Aborted" in out
    doc = json.loads(fleet.rollout_ok("status", "rb", "-o", "json")[1])
    changed = [n for n, p in doc["pods"].items() if p["batch"]]
    assert len(changed) == 3, doc["pods"]  # 9 pods, 25 %: the first batch of 3
    for name in changed:
        assert f"failed {name}" in out and "v3 is not for this game" in out, out
        assert fleet.desired_of(name)["version"] == "v1"
    for member in sets.b:
        wait_until(lambda m=member: m.version() == "v1", 30, f"{member.name} on v1")
        if member.name not in changed:  # never touched
            desired = fleet.desired_of(member.name)
            assert desired is None or desired.get("rollout") != "rb"
    assert all(m.version() == "v2" for m in sets.a)
    assert doc["status"]["phase"] == "Aborted"
