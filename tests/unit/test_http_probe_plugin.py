"""The http_probe plugin in-process: real game endpoint on loopback, real LocalStore."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kidecar_supervisor.storage.base import JOURNALED
from tests.support.game_endpoint import GameEndpoint
from tests.support.http_probe_support import run_plugin, wait_until

INTERVAL = 0.05

POLICIES: list[dict[str, Any]] = [
    {"state": "WaitToBeDeleted", "gameServerOpsState": "WaitToBeDeleted",
     "annotations": {"deleting": "true"}},
    {"state": "None", "gameServerOpsState": "None"},
    {"state": "idle", "labels": {"gameserver-idle": "true"},
     "annotations": {"controller.kubernetes.io/pod-deletion-cost": "-10"}},
    {"state": "busy", "labels": {"gameserver-idle": "false", "busy": "yes"},
     "annotations": {"controller.kubernetes.io/pod-deletion-cost": "10"}},
]


@pytest.fixture
def game() -> Iterator[GameEndpoint]:
    server = GameEndpoint()
    yield server
    server.stop()


def config(*endpoints: dict[str, Any], interval: float = INTERVAL,
           delay: float = 0) -> dict[str, Any]:
    return {"startDelaySeconds": delay, "probeIntervalSeconds": interval,
            "endpoints": list(endpoints)}


def endpoint(url: str, policies: list[dict[str, Any]] | None = None,
             **extra: Any) -> dict[str, Any]:
    inkube = extra.pop("inKube", {})
    return {
        "url": url, "timeout": extra.pop("timeout", 2),
        "storageConfig": {"type": "Local",
                          "inKube": {"markerPolicies": POLICIES if policies is None else policies,
                                     **inkube}},
        **extra,
    }


def test_states_become_markers_without_stale_leftovers(game: GameEndpoint, tmp_path: Path) -> None:
    game.set("/", body="idle")
    with run_plugin(config(endpoint(game.url(), inKube={"annotationKey": "http_probe"})),
                    tmp_path) as run:
        wait_until(lambda: run.markers()["label"] == {"gameserver-idle": "true"})
        assert run.markers()["annotation"] == {
            "controller.kubernetes.io/pod-deletion-cost": "-10", "http_probe": "idle"}
        assert run.markers()["target"] == {}

        game.set("/", body="busy")
        wait_until(lambda: run.markers()["label"] == {"gameserver-idle": "false", "busy": "yes"})

        game.set("/", body="WaitToBeDeleted")
        wait_until(lambda: run.markers()["target"] == {"/spec/opsState": "WaitToBeDeleted"})
        assert run.markers()["label"] == {}
        assert run.markers()["annotation"] == {"deleting": "true", "http_probe": "WaitToBeDeleted"}

        game.set("/", body="None")
        wait_until(lambda: run.markers()["target"] == {"/spec/opsState": "None"})
        assert run.markers()["annotation"] == {"http_probe": "None"}

        # a state without policy: raw annotation only, opsState left as it is
        game.set("/", body="warming up")
        wait_until(lambda: run.markers()["annotation"] == {"http_probe": "warming up"})
        assert run.markers()["target"] == {"/spec/opsState": "None"}
        assert run.endpoint()["appliedState"] == "warming up"


def test_steady_state_costs_one_write_for_twenty_probes(game: GameEndpoint,
                                                          tmp_path: Path) -> None:
    game.set("/", body="idle")
    with run_plugin(config(endpoint(game.url())), tmp_path) as run:
        wait_until(lambda: game.request_count() >= 21)
        wait_until(lambda: run.endpoint()["probes"] >= 21)
        assert run.writes == 1
        assert run.endpoint()["writes"] == 1
        (store,) = run.stores.values()
        assert store.calls[0].labels == {"gameserver-idle": "true", "busy": None}


def test_one_odd_probe_does_not_flip(game: GameEndpoint, tmp_path: Path) -> None:
    game.set("/", body="idle")
    with run_plugin(config(endpoint(game.url(), successThreshold=2)), tmp_path) as run:
        wait_until(lambda: run.markers()["label"] == {"gameserver-idle": "true"})
        seen = game.request_count()
        game.set("/", next_bodies=["busy"])
        wait_until(lambda: game.request_count() >= seen + 8)
        assert run.markers()["label"] == {"gameserver-idle": "true"}
        assert run.writes == 1
        assert "busy" not in [c.labels.get("busy") for s in run.stores.values() for c in s.calls]


def test_a_game_flapping_every_probe_never_flips(game: GameEndpoint, tmp_path: Path) -> None:
    game.set("/", body="idle")
    with run_plugin(config(endpoint(game.url(), successThreshold=2)), tmp_path) as run:
        wait_until(lambda: run.writes == 1)
        game.set("/", flap=["busy", "idle"], served=0)
        seen = game.request_count()
        wait_until(lambda: game.request_count() >= seen + 20)
        assert run.writes == 1
        assert run.markers()["label"] == {"gameserver-idle": "true"}
        # a real change (two in a row) still goes through
        game.set("/", flap=[], body="busy")
        wait_until(lambda: run.markers()["label"] == {"gameserver-idle": "false", "busy": "yes"})
        assert run.writes == 2


FAILED_POLICY: list[dict[str, Any]] = [
    *POLICIES,
    {"state": "Failed", "labels": {"gameserver-idle": "false"},
     "annotations": {"game-unreachable": "true"}},
]


@pytest.mark.parametrize("how", ["status", "timeout", "refused"])
def test_failures_apply_the_failed_policy_after_failure_threshold(
    game: GameEndpoint, tmp_path: Path, how: str
) -> None:
    game.set("/", body="idle")
    cfg = config(endpoint(game.url(), FAILED_POLICY, timeout=0.15, failureThreshold=3),
                 interval=0.25)
    with run_plugin(cfg, tmp_path) as run:
        wait_until(lambda: run.markers()["label"] == {"gameserver-idle": "true"})
        if how == "status":
            game.set("/", status=500)
        elif how == "timeout":
            game.set("/", delay=1.0)
        else:
            game.stop()
        wait_until(lambda: run.endpoint()["consecutiveFailures"] == 2)
        # two failures: nothing changed yet (the third probe is 0.25 s away)
        assert run.markers()["label"] == {"gameserver-idle": "true"}
        assert run.writes == 1
        wait_until(lambda: run.markers()["annotation"].get("game-unreachable") == "true")
        assert run.markers()["label"] == {"gameserver-idle": "false"}
        status = run.endpoint()
        assert status["appliedState"] == "Failed"
        assert status["consecutiveFailures"] >= 3
        expected = {"status": "status 500, expected 200", "timeout": "timed out after 0.15s",
                    "refused": "connection refused"}[how]
        assert status["lastError"] == expected
        # recovery
        if how == "refused":
            game.start()
        game.set("/", status=200, delay=0.0)
        wait_until(lambda: run.markers()["label"] == {"gameserver-idle": "true"})
        assert "game-unreachable" not in run.markers()["annotation"]


def test_failures_without_failed_policy_leave_markers(game: GameEndpoint, tmp_path: Path) -> None:
    game.set("/", body="idle")
    with run_plugin(config(endpoint(game.url(), failureThreshold=2)), tmp_path) as run:
        wait_until(lambda: run.writes == 1)
        game.set("/", status=503)
        wait_until(lambda: run.endpoint()["consecutiveFailures"] >= 6)
        assert run.endpoint()["appliedState"] == "Failed"
        assert run.markers()["label"] == {"gameserver-idle": "true"}
        assert run.writes == 1
        game.set("/", status=200)  # back to the same state: still no write
        wait_until(lambda: run.endpoint()["appliedState"] == "idle")
        assert run.writes == 1


def test_start_delay_is_honoured(game: GameEndpoint, tmp_path: Path) -> None:
    started = time.monotonic()
    with run_plugin(config(endpoint(game.url()), delay=0.6, interval=0.1), tmp_path):
        wait_until(lambda: game.request_count() >= 3)
    hits = game.requests()
    assert 0.6 <= hits[0].at - started < 1.2
    gaps = [b.at - a.at for a, b in zip(hits, hits[1:], strict=False)]
    assert all(0.05 < gap < 0.35 for gap in gaps), gaps


@pytest.mark.slow
def test_a_slow_endpoint_does_not_delay_another(game: GameEndpoint, tmp_path: Path) -> None:
    game.set("/slow", body="idle", delay=1.5)
    game.set("/fast", body="idle")
    cfg = config(endpoint(game.url("/slow"), timeout=3), endpoint(game.url("/fast")),
                 interval=0.1)
    with run_plugin(cfg, tmp_path):
        time.sleep(2.0)
    fast = [h.at for h in game.requests("/fast")]
    slow = game.requests("/slow")
    assert len(slow) <= 2
    assert len(fast) >= 14, len(fast)
    # a shared schedule would leave 1.5 s holes while the slow answer is awaited
    gaps = [b - a for a, b in zip(fast, fast[1:], strict=False)]
    assert max(gaps) < 0.5, gaps


def test_first_endpoint_with_a_matching_policy_wins(game: GameEndpoint, tmp_path: Path) -> None:
    first = [{"state": "WaitToBeDeleted", "gameServerOpsState": "WaitToBeDeleted"}]
    second = [{"state": "Allocated", "gameServerOpsState": "Allocated"},
              {"state": "None", "gameServerOpsState": "None"}]
    game.set("/a", body="WaitToBeDeleted")
    game.set("/b", body="Allocated")
    cfg = config(endpoint(game.url("/a"), first), endpoint(game.url("/b"), second))
    with run_plugin(cfg, tmp_path) as run:
        wait_until(lambda: run.endpoint(0)["appliedState"] == "WaitToBeDeleted"
                   and run.endpoint(1)["appliedState"] == "Allocated")
        wait_until(lambda: run.markers()["target"] == {"/spec/opsState": "WaitToBeDeleted"})
        seen = game.request_count()
        wait_until(lambda: game.request_count() >= seen + 20)
        # no fight: one write each time the winner changes, not one per probe
        assert run.markers()["target"] == {"/spec/opsState": "WaitToBeDeleted"}
        assert run.writes <= 2
        before = run.writes
        game.set("/a", body="fine")  # no policy for it: the second endpoint decides
        wait_until(lambda: run.markers()["target"] == {"/spec/opsState": "Allocated"})
        assert run.writes == before + 1


def test_store_failures_retry_with_backoff_and_keep_the_latest_state(
    game: GameEndpoint, tmp_path: Path
) -> None:
    game.set("/", body="idle")
    with run_plugin(config(endpoint(game.url())), tmp_path) as run:
        wait_until(lambda: run.writes == 1)
        (store,) = run.stores.values()
        store.fail = True
        game.set("/", body="busy")
        wait_until(lambda: store.attempts >= 2)
        game.set("/", body="WaitToBeDeleted")
        seen = game.request_count()
        wait_until(lambda: game.request_count() >= seen + 30)  # 1.5 s of probes
        assert run.plugin.status()["pendingWrite"] is True
        assert "writing markers failed" in run.endpoint()["lastError"]
        # retries back off (1 s, 2 s...): far fewer attempts than probes
        assert store.attempts <= 5
        store.fail = False
        wait_until(lambda: run.markers()["target"] == {"/spec/opsState": "WaitToBeDeleted"},
                   timeout=8)
        assert run.markers()["label"] == {}
        assert run.plugin.status()["pendingWrite"] is False
        assert run.writes == 2  # the final state, not every intermediate one


def test_journaled_writes_count_as_done(game: GameEndpoint, tmp_path: Path) -> None:
    game.set("/", body="idle")
    with run_plugin(config(endpoint(game.url())), tmp_path) as run:
        wait_until(lambda: run.stores)
        (store,) = run.stores.values()
        store.result = JOURNALED
        wait_until(lambda: run.writes == 1)
        seen = game.request_count()
        wait_until(lambda: game.request_count() >= seen + 10)
        assert run.writes == 1
        assert run.endpoint()["lastWrite"] == JOURNALED
        game.set("/", body="busy")
        wait_until(lambda: run.writes == 2)


def test_label_key_gets_a_valid_label_value(game: GameEndpoint, tmp_path: Path) -> None:
    game.set("/", body="Wait To Be Deleted!")
    cfg = config(endpoint(game.url(), [], inKube={"labelKey": "game-state"}))
    with run_plugin(cfg, tmp_path) as run:
        wait_until(lambda: run.markers()["label"] == {"game-state": "Wait-To-Be-Deleted"})


def test_json_path_state(game: GameEndpoint, tmp_path: Path) -> None:
    game.set("/", body='{"room": {"state": "busy", "players": 4}}')
    cfg = config(endpoint(game.url(), jsonPathConfig={"jsonPath": "$.room.state"}))
    with run_plugin(cfg, tmp_path) as run:
        wait_until(lambda: run.markers()["label"] == {"gameserver-idle": "false", "busy": "yes"})
        assert run.endpoint()["lastState"] == "busy"


def test_http_metric_publishes_a_gauge_and_writes_nothing(game: GameEndpoint,
                                                          tmp_path: Path) -> None:
    game.set("/", body='{"players": 3}')
    cfg = config({
        "url": game.url(), "jsonPathConfig": {"jsonPath": "$.players", "fieldType": "number"},
        "failureThreshold": 1,
        "storageConfig": {"type": "HTTPMetric", "httpMetric": {"metricName": "game_players"}},
    })
    with run_plugin(cfg, tmp_path) as run:
        wait_until(lambda: run.gauges)
        assert run.gauges[0] == ("game_players", 3.0, {"endpoint": game.url()})
        game.set("/", body='{"players": 5}')
        wait_until(lambda: run.gauges[-1][1] == 5.0)
        seen = len(run.gauges)
        time.sleep(0.3)
        assert len(run.gauges) == seen  # published on change only
        game.set("/", status=500)
        wait_until(lambda: run.gauges[-1][1] != run.gauges[-1][1])  # NaN while failing
        assert run.stores == {}


def test_status_reports_each_endpoint(game: GameEndpoint, tmp_path: Path) -> None:
    game.set("/", body="idle")
    with run_plugin(config(endpoint(game.url())), tmp_path) as run:
        wait_until(lambda: run.writes == 1)
        status = run.endpoint()
        assert status["url"] == game.url()
        assert status["lastState"] == status["appliedState"] == status["markerState"] == "idle"
        assert abs(status["lastProbeTime"] - time.time()) < 2
        assert status["consecutiveFailures"] == 0 and status["lastError"] == ""
        assert status["writes"] == 1 and status["lastWrite"] == "written"


def test_stop_interrupts_a_hanging_probe(game: GameEndpoint, tmp_path: Path) -> None:
    game.set("/", delay=20)
    with run_plugin(config(endpoint(game.url(), timeout=30)), tmp_path):
        wait_until(lambda: game.request_count() >= 1)
    # run_plugin asserts run() returned within 5 s of stop()


def test_go_kidecar_jsonpathconfigs_and_gjson_path_write_the_target(
        game: GameEndpoint, tmp_path: Path) -> None:
    """The Go kidecar's documents: a gjson jsonPath picks the state, and a policy's
    jsonPathConfigs write their values into the target at their own pointers."""
    policies = [{"state": "idle", "gameServerOpsState": "None",
                 "jsonPathConfigs": [{"jsonPath": "/spec/networkDisabled", "fieldType": "bool",
                                      "value": False},
                                     {"jsonPath": "/spec/updatePriority", "value": 7}]},
                {"state": "busy", "gameServerOpsState": "Allocated",
                 "jsonPathConfigs": [{"jsonPath": "/spec/updatePriority", "value": "1"}]}]
    game.set("/", body='{"game": {"rooms": [{"state": "idle"}]}}')
    ep = endpoint(game.url(), policies, jsonPathConfig={"jsonPath": "game.rooms.0.state"})
    with run_plugin(config(ep), tmp_path) as run:
        wait_until(lambda: run.markers()["target"] == {
            "/spec/opsState": "None", "/spec/networkDisabled": "false",
            "/spec/updatePriority": "7"})
        game.set("/", body='{"game": {"rooms": [{"state": "busy"}]}}')
        wait_until(lambda: run.markers()["target"] == {
            "/spec/opsState": "Allocated", "/spec/networkDisabled": "false",
            "/spec/updatePriority": "1"})
