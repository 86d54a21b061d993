"""``kidecar rollout`` survives its own death and respects busy game servers (issue 11 §2).

Four real sidecars of one GameServerSet, shared by the scenarios in order: the
driver SIGKILLed mid-rollout and started again completes it with no pod
updated twice (reloads counted per game), and a pod created after the first
batch starts on the new version; then a rollout back to v1 defers an
``Allocated`` game server and updates it once it turns ``None``; pause and
resume are obeyed by the running driver.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kube.rollout_fleet import Fleet, Member, running_fleet, uid, wait_until

pytestmark = [pytest.mark.kube, pytest.mark.slow]


@pytest.fixture(scope="module")
def fleet(kube_env: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with running_fleet(kube_env, tmp_path_factory.mktemp("recovery")) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def gss(fleet: Fleet) -> list[Member]:
    return fleet.create(uid("gssc"), 4)


def record(fleet: Fleet, name: str) -> dict[str, Any] | None:
    cm = fleet.admin.configmap(f"kidecar-rollout-{name}", fleet.ns)
    if cm is None:
        return None
    data = cm["data"]
    return {"status": json.loads(data["status"]), "pods": json.loads(data["pods"]),
            "control": data.get("control", "")}


def test_a_killed_driver_continues_where_it_was_and_updates_no_pod_twice(
        fleet: Fleet, gss: list[Member]) -> None:
    args = ("start", "rk", "--gameserverset", gss[0].gss, "--version", "v2", "--url",
            fleet.urls["v2"], "--batch-size", "1", "--pause-seconds", "2",
            "--batch-timeout-seconds", "60")
    driver = fleet.rollout(*args)
    wait_until(lambda: (record(fleet, "rk") or {}).get("status", {}).get("batch", 0) >= 2,
               120, "the second batch")
    driver.send_signal(signal.SIGKILL)
    driver.wait(10)
    state = record(fleet, "rk")
    assert state is not None and state["status"]["phase"] == "Running"
    # a pod the set makes now (no desired version) starts on v2: the first batch passed
    new = fleet.create(gss[0].gss, 1, version="v2", first=4, desired=False)[0]
    code, out = fleet.rollout_ok(*args)
    assert code == 0, out
    assert "continuing" in out and "Succeeded" in out
    for member in [*gss, new]:
        assert member.version() == "v2", member.name
    for member in gss:
        assert member.loaded("v2") == 1, f"{member.name} loaded v2 {member.loaded('v2')}x"
    assert new.loaded("v2") == 1
    gss.append(new)


def test_an_allocated_game_server_is_deferred_until_it_is_idle(
        fleet: Fleet, gss: list[Member]) -> None:
    busy = gss[0]
    fleet.set_ops_state(busy.name, "Allocated")
    driver = fleet.rollout("start", "rback", "--gameserverset", busy.gss, "--version", "v1",
                           "--url", fleet.urls["v1"], "--batch-size", "100%",
                           "--batch-timeout-seconds", "60", "--idle-timeout-seconds", "300")
    try:
        for member in gss[1:]:
            wait_until(lambda m=member: m.version() == "v1", 90, f"{member.name} on v1")
        time.sleep(2)
        assert busy.version() == "v2", "a player is on it: not updated"
        assert record(fleet, "rback")["pods"][busy.name][0] == "deferred"
        fleet.set_ops_state(busy.name, "None")
        out, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out
    assert f"pod {busy.name}: deferred" in out
    assert busy.version() == "v1" and busy.loaded("v1") >= 1


def test_pause_and_resume_are_obeyed_by_the_running_driver(
        fleet: Fleet, gss: list[Member]) -> None:
    driver = fleet.rollout("start", "rp", "--gameserverset", gss[0].gss, "--version", "v2",
                           "--url", fleet.urls["v2"], "--batch-size", "1",
                           "--pause-seconds", "1", "--batch-timeout-seconds", "60")
    try:
        wait_until(lambda: (record(fleet, "rp") or {}).get("status", {}).get("batch", 0) >= 1,
                   60, "the first batch")
        code, out = fleet.rollout_ok("pause", "rp")
        assert code == 0, out
        wait_until(lambda: record(fleet, "rp")["status"]["phase"] == "Paused", 30, "paused")
        batch = record(fleet, "rp")["status"]["batch"]
        time.sleep(4)
        assert record(fleet, "rp")["status"]["batch"] == batch, "no batch while paused"
        code, text = fleet.rollout_ok("status", "rp")
        assert "Paused" in text
        assert fleet.rollout_ok("resume", "rp")[0] == 0
        out, _ = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out
    assert "paused" in out and "resumed" in out
    assert all(m.version() == "v2" for m in gss)


def test_an_abort_after_a_good_batch_puts_it_back_and_new_pods_start_on_the_previous(
        fleet: Fleet, gss: list[Member]) -> None:
    assert all(m.version() == "v2" for m in gss)
    driver = fleet.rollout("start", "rab", "--gameserverset", gss[0].gss, "--version", "v1",
                           "--url", fleet.urls["v1"], "--batch-size", "1",
                           "--pause-seconds", "600", "--batch-timeout-seconds", "60")
    try:
        first = gss[0]  # name order: the first batch
        wait_until(lambda: (record(fleet, "rab") or {}).get("pods", {}).get(
            first.name, [""])[0] == "done", 90, "the first batch done")
        assert first.version() == "v1"
        # the workload's newest confirmed version is v1 now: a new pod would start on it
        code, out = fleet.rollout_ok("abort", "rab")
        assert code == 0 and "Aborted" in out, out
        out, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 1, out
    wait_until(lambda: first.version() == "v2", 60, "the first batch back on v2")
    assert all(m.version() == "v2" for m in gss)
    assert fleet.desired_of(first.name)["version"] == "v2"
    new = fleet.create(gss[0].gss, 1, version="v2", first=len(gss), desired=False)[0]
    assert new.version() == "v2"
    gss.append(new)


def test_a_second_start_asking_another_version_is_refused(fleet: Fleet,
                                                          gss: list[Member]) -> None:
    code, out = fleet.rollout_ok("start", "rk", "--gameserverset", gss[0].gss, "--version",
                                 "v3", "--url", fleet.urls["v3"])
    assert code == 3, out
    assert "exists and asks another version, url" in out
    code, out = fleet.rollout_ok("status", "nothing-here")
    assert code == 3 and "no rollout 'nothing-here'" in out


def test_the_driver_and_the_sidecars_ride_out_an_api_server_restart(
        kube_env: Any, fleet: Fleet, gss: list[Member]) -> None:
    target = "v1" if gss[0].version() == "v2" else "v2"
    driver = fleet.rollout("start", "rout", "--gameserverset", gss[0].gss, "--version",
                           target, "--url", fleet.urls[target], "--batch-size", "1",
                           "--pause-seconds", "1", "--batch-timeout-seconds", "90")
    try:
        wait_until(lambda: (record(fleet, "rout") or {}).get("status", {}).get("batch", 0) >= 1,
                   60, "the first batch")
        with kube_env.apiserver_outage():
            time.sleep(5)
        out, _ = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out
    assert "Kubernetes API unavailable" in out
    assert all(m.version() == target for m in gss)
