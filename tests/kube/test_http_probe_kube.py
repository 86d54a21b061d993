"""http_probe against the real API server: GameServer opsState, pod markers, outages.

The plugin runs in-process with real InKubeStores authenticated as the
sidecar's ServiceAccount user (config/rbac.yaml applied), probing a real
loopback game endpoint; the pod and its GameServer are created as admin.
API writes are counted in the API server's audit log.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kidecar_supervisor.plugin_api import PodIdentity
from kidecar_supervisor.storage.base import JOURNALED, StorageConfig
from kidecar_supervisor.storage.inkube import InKubeStore
from tests.support.game_endpoint import GameEndpoint
from tests.support.http_probe_support import run_plugin, wait_until
from tests.support.sidecar_process import start_sidecar

pytestmark = [pytest.mark.kube, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
GS = ("game.kruise.io", "v1alpha1")
WRITE_VERBS = ("create", "update", "patch", "delete")
SEED_POLICIES: list[dict[str, Any]] = [
    {"state": "WaitToBeDeleted", "gameServerOpsState": "WaitToBeDeleted"},
    {"state": "Allocated", "gameServerOpsState": "Allocated"},
    {"state": "None", "gameServerOpsState": "None",
     "labels": {"gameserver-idle": "true"},
     "annotations": {"controller.kubernetes.io/pod-deletion-cost": "-10"}},
]


@pytest.fixture(scope="module")
def rbac(kube_env: Any) -> None:
    text = (REPO / "config" / "rbac.yaml").read_text()
    text = text.replace("${POD_NAMESPACE}", kube_env.namespace)
    text = text.replace("${RESULT_NAMESPACE}", kube_env.namespace)
    kube_env.apply_yaml(text)


@pytest.fixture
def pod(kube_env: Any, rbac: None) -> Iterator[str]:
    """A pod and its GameServer (same name, opsState None), created as admin."""
    name = f"game-{uuid.uuid4().hex[:8]}"
    api = kube_env.admin_api()
    ns = kube_env.namespace
    manifest: Any = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "game", "image": "game:latest"}]},
    }
    client.CoreV1Api(api).create_namespaced_pod(ns, manifest)
    client.CustomObjectsApi(api).create_namespaced_custom_object(*GS, ns, "gameservers", {
        "apiVersion": "game.kruise.io/v1alpha1", "kind": "GameServer",
        "metadata": {"name": name}, "spec": {"opsState": "None"},
    })
    yield name
    client.CustomObjectsApi(api).delete_namespaced_custom_object(*GS, ns, "gameservers", name)
    client.CoreV1Api(api).delete_namespaced_pod(name, ns, grace_period_seconds=0)


@pytest.fixture
def game() -> Iterator[GameEndpoint]:
    server = GameEndpoint()
    yield server
    server.stop()


def ops_state(kube_env: Any, name: str) -> str:
    gs: Any = client.CustomObjectsApi(kube_env.admin_api()).get_namespaced_custom_object(
        *GS, kube_env.namespace, "gameservers", name)
    return str(gs["spec"].get("opsState"))


def pod_meta(kube_env: Any, name: str) -> tuple[dict[str, str], dict[str, str]]:
    p: Any = client.CoreV1Api(kube_env.admin_api()).read_namespaced_pod(name, kube_env.namespace)
    return dict(p.metadata.labels or {}), dict(p.metadata.annotations or {})


def api_writes(kube_env: Any, name: str) -> list[dict[str, Any]]:
    """Write requests of the sidecar user to the pod or GameServer ``name``."""
    return [e for e in kube_env.audit_events(user=kube_env.sidecar_user, verbs=WRITE_VERBS)
            if e.get("objectRef", {}).get("name") == name]


def config(url: str, storage: dict[str, Any], interval: float = 0.2) -> dict[str, Any]:
    return {"probeIntervalSeconds": interval,
            "endpoints": [{"url": url, "timeout": 2, "storageConfig": storage}]}


def run(kube_env: Any, cfg: dict[str, Any], name: str, state_dir: Path) -> Any:
    identity = PodIdentity(pod_name=name, namespace=kube_env.namespace)

    def factory(storage: StorageConfig) -> InKubeStore:
        return InKubeStore(storage, identity, state_dir, kubeconfig=kube_env.sidecar_kubeconfig)

    return run_plugin(cfg, state_dir, store_factory=factory, identity=identity)


def test_seed_policies_drive_ops_state_and_pod_markers(
    kube_env: Any, pod: str, game: GameEndpoint, tmp_path: Path
) -> None:
    game.set("/", body="None")
    storage = {"type": "InKube", "inKube": {"markerPolices": SEED_POLICIES,
                                            "annotationKey": "http_probe"}}
    with run(kube_env, config(game.url(), storage), pod, tmp_path):
        wait_until(lambda: pod_meta(kube_env, pod)[0].get("gameserver-idle") == "true")
        labels, annotations = pod_meta(kube_env, pod)
        assert annotations["controller.kubernetes.io/pod-deletion-cost"] == "-10"
        assert annotations["http_probe"] == "None"
        assert ops_state(kube_env, pod) == "None"

        game.set("/", body="WaitToBeDeleted")
        wait_until(lambda: ops_state(kube_env, pod) == "WaitToBeDeleted")
        wait_until(lambda: "gameserver-idle" not in pod_meta(kube_env, pod)[0])
        labels, annotations = pod_meta(kube_env, pod)
        assert "controller.kubernetes.io/pod-deletion-cost" not in annotations
        assert annotations["http_probe"] == "WaitToBeDeleted"

        game.set("/", body="None")
        wait_until(lambda: ops_state(kube_env, pod) == "None")
        wait_until(lambda: pod_meta(kube_env, pod)[0].get("gameserver-idle") == "true")


def test_target_and_json_path_receive_the_state(
    kube_env: Any, pod: str, game: GameEndpoint, tmp_path: Path
) -> None:
    game.set("/", body="None")
    storage = {"type": "InKube", "inKube": {
        "target": {"group": "game.kruise.io", "version": "v1alpha1", "resource": "gameservers",
                   "name": pod, "namespace": kube_env.namespace},
        "jsonPath": "/spec/opsState"}}
    with run(kube_env, config(game.url(), storage), pod, tmp_path):
        game.set("/", body="WaitToBeDeleted")
        wait_until(lambda: ops_state(kube_env, pod) == "WaitToBeDeleted")
        game.set("/", body="None")
        wait_until(lambda: ops_state(kube_env, pod) == "None")


def test_steady_state_makes_no_api_writes(
    kube_env: Any, pod: str, game: GameEndpoint, tmp_path: Path
) -> None:
    game.set("/", body="WaitToBeDeleted")
    storage = {"type": "InKube", "inKube": {"markerPolices": SEED_POLICIES,
                                            "annotationKey": "http_probe"}}
    with run(kube_env, config(game.url(), storage, interval=0.1), pod, tmp_path) as running:
        wait_until(lambda: ops_state(kube_env, pod) == "WaitToBeDeleted")
        wait_until(lambda: pod_meta(kube_env, pod)[1].get("http_probe") == "WaitToBeDeleted")
        first = len(api_writes(kube_env, pod))
        assert first >= 1
        seen = game.request_count()
        wait_until(lambda: game.request_count() >= seen + 20)
        assert len(api_writes(kube_env, pod)) == first
        assert running.writes == 1


def test_probing_continues_through_an_api_outage_and_the_latest_state_lands(
    kube_env: Any, pod: str, game: GameEndpoint, tmp_path: Path
) -> None:
    game.set("/", body="None")
    storage = {"type": "InKube", "inKube": {"markerPolices": SEED_POLICIES,
                                            "annotationKey": "http_probe"}}
    with run(kube_env, config(game.url(), storage), pod, tmp_path) as running:
        wait_until(lambda: pod_meta(kube_env, pod)[1].get("http_probe") == "None")
        with kube_env.apiserver_outage():
            game.set("/", body="Allocated")
            wait_until(lambda: running.endpoint()["appliedState"] == "Allocated")
            game.set("/", body="WaitToBeDeleted")
            wait_until(lambda: running.endpoint()["appliedState"] == "WaitToBeDeleted")
            probes = running.endpoint()["probes"]
            wait_until(lambda: running.endpoint()["probes"] >= probes + 5, timeout=20)
            # the store journaled the writes: done as far as the plugin is concerned
            wait_until(lambda: running.endpoint()["lastWrite"] == JOURNALED, timeout=30)
            assert running.plugin.status()["pendingWrite"] is False
        wait_until(lambda: ops_state(kube_env, pod) == "WaitToBeDeleted", timeout=60)
        wait_until(lambda: pod_meta(kube_env, pod)[1].get("http_probe") == "WaitToBeDeleted",
                   timeout=30)
        labels, annotations = pod_meta(kube_env, pod)
        assert "gameserver-idle" not in labels
        assert "controller.kubernetes.io/pod-deletion-cost" not in annotations


def test_seed_config_in_the_real_sidecar_drives_the_game_server(
    kube_env: Any, pod: str, game: GameEndpoint, tmp_path: Path
) -> None:
    """The published seed document, unchanged but for the URL and timings, end to end."""
    seed = REPO / "tests" / "support" / "fixtures" / "seed-http-probe.yaml"
    configmap = yaml.safe_load(seed.read_text())
    config = yaml.safe_load(configmap["data"]["config.yaml"])
    probe = config["plugins"][0]["config"]
    probe["endpoints"][0]["url"] = game.url()
    probe["startDelaySeconds"], probe["probeIntervalSeconds"] = 0, 0.2
    game.set("/", body="Allocated")
    env = {"POD_NAME": pod, "POD_NAMESPACE": kube_env.namespace,
           "KUBECONFIG": kube_env.sidecar_kubeconfig}
    sidecar = start_sidecar(config, tmp_path, env=env)
    try:
        sidecar.wait_for(lambda: ops_state(kube_env, pod) == "Allocated", timeout=30,
                         what="opsState Allocated")
        game.set("/", body="WaitToBeDeleted")
        sidecar.wait_for(lambda: ops_state(kube_env, pod) == "WaitToBeDeleted", timeout=30,
                         what="opsState WaitToBeDeleted")
        writes = len(api_writes(kube_env, pod))
        seen = game.request_count()
        sidecar.wait_for(lambda: game.request_count() >= seen + 20, what="20 more probes")
        assert len(api_writes(kube_env, pod)) == writes
        game.set("/", body="None")
        sidecar.wait_for(lambda: ops_state(kube_env, pod) == "None", timeout=30,
                         what="opsState None")
    finally:
        assert sidecar.stop() == 0
