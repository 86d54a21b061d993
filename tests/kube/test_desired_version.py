"""The desired version on the real API server with real sidecars (issue 11 §1).

One real ``kidecar run`` per pod follows the desired-version annotation of its
own pod through the storage process's watch: applied through the POST
/hot-update path (confirmed by the game), a refused one is not retried in a
loop, the desired version wins at start (also for a sidecar SIGKILLed and
restarted while it changed), and the watch survives an API server restart.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from kidecar_supervisor.rollout.spec import DESIRED_ANNOTATION
from tests.kube.rollout_fleet import Fleet, Member, running_fleet, uid, wait_until

pytestmark = [pytest.mark.kube, pytest.mark.slow]


@pytest.fixture(scope="module")
def fleet(kube_env: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(kube_env, tmp_path_factory.mktemp("desired")) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def pair(fleet: Fleet) -> list[Member]:
    return fleet.create(uid("dv"), 2)


def set_desired(fleet: Fleet, member: Member, text: str) -> None:
    fleet.admin.call("PATCH", f"/api/v1/namespaces/{fleet.ns}/pods/{member.name}",
                     {"metadata": {"annotations": {DESIRED_ANNOTATION: text}}},
                     content_type="application/merge-patch+json")


def test_started_on_the_desired_version_and_follows_it(fleet: Fleet, pair: list[Member]) -> None:
    member = pair[0]
    # the fixture's pods started on v1 through the desired annotation (files said v0)
    assert member.version() == "v1"
    assert fleet.result(member.name)["version"] == "v1"
    set_desired(fleet, member, fleet.desired("v2"))
    wait_until(lambda: member.version() == "v2", 60, "the game on v2")
    wait_until(lambda: (fleet.result(member.name) or {}).get("version") == "v2", 30,
               "the v2 result on the pod")
    assert fleet.result(member.name)["success"] is True
    status = member.sidecar.get("/hot-update").json()  # type: ignore[union-attr]
    assert status["version"] == "v2"


def test_a_refused_desired_version_is_not_retried_until_a_new_value(
        fleet: Fleet, pair: list[Member]) -> None:
    member = pair[0]
    assert member.version() == "v2"
    set_desired(fleet, member, fleet.desired("v3"))
    wait_until(lambda: (fleet.result(member.name) or {}).get("version") == "v3", 60,
               "the v3 result")
    result = fleet.result(member.name)
    assert result["success"] is False and result["lastGood"]["version"] == "v2"
    wait_until(lambda: member.version() == "v2", 30, "the game back on v2")
    loads = member.loads()
    time.sleep(4)  # a retry loop would reload the game again meanwhile
    assert member.loads() == loads
    assert member.version() == "v2"
    # a new value (another rollout of the same version) is a new attempt
    set_desired(fleet, member, fleet.desired("v2", rollout="again"))
    time.sleep(2)
    assert member.loads() == loads, "v2 is applied already: unchanged, no reload"


def test_a_sidecar_killed_while_its_desired_version_changed_applies_it_at_start(
        fleet: Fleet, pair: list[Member]) -> None:
    member = pair[1]
    assert member.version() == "v1"
    fleet.kill_sidecar(member)
    set_desired(fleet, member, fleet.desired("v2"))
    time.sleep(1)
    assert member.version() == "v1"
    fleet.start(member)
    member.sidecar.wait_for(  # type: ignore[union-attr]
        lambda: member.sidecar.get("/readyz").status_code == 200, 60,  # type: ignore[union-attr]
        what="ready")
    # ready only after the desired version was applied (it wins at start)
    assert member.version() == "v2"
    restore = member.sidecar.get("/hot-update").json()["restore"]  # type: ignore[union-attr]
    assert restore["state"] == "desired" and restore["version"] == "v2"


def test_the_watch_survives_an_api_server_restart(kube_env: Any, fleet: Fleet,
                                                  pair: list[Member]) -> None:
    member = pair[1]
    assert member.version() == "v2"
    with kube_env.apiserver_outage():
        time.sleep(2)  # the watch breaks and backs off
    # written while the sidecar's watch is still reconnecting: not missed
    set_desired(fleet, member, fleet.desired("v1", rollout="after-restart"))
    wait_until(lambda: member.version() == "v1", 90, "the game on v1 after the restart")
    assert "Traceback" not in member.sidecar.log()  # type: ignore[union-attr]
