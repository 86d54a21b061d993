"""A plugin that fails (crash loop) is told on the pod as a Kubernetes Event, through
the sidecar's own ServiceAccount on the real API server."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.support.sidecar_process import REPO, start_sidecar

pytestmark = [pytest.mark.kube, pytest.mark.slow]


def test_failed_plugin_becomes_a_warning_event_on_the_pod(kube_env: Any, tmp_path: Path) -> None:
    text = (REPO / "config" / "rbac.yaml").read_text()
    kube_env.apply_yaml(text.replace("${POD_NAMESPACE}", kube_env.namespace)
                        .replace("${RESULT_NAMESPACE}", kube_env.namespace))
    ns = kube_env.namespace
    name = f"events-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_env.admin_api())
    core.create_namespaced_pod(ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                                    "spec": {"containers": [{"name": "game", "image": "g:1"}]}})
    shared = tmp_path / "shared"
    config = {"plugins": [
        {"name": "hot_update", "config": {
            "fileDir": str(shared), "loadPatchType": "signal",
            "signal": {"processName": "no-game-here", "signalName": "SIGHUP"},
            "storageConfig": {"type": "InKube", "inKube": {
                "annotationKey": "kidecar.test/hot-update",
                "resultConfigMap": {"name": "sidecar-result", "namespace": ns}}}}},
        {"name": "test_crasher", "maxRestarts": 1, "backoffSeconds": 0.05,
         "config": {"exitCode": 4, "afterSeconds": 2}},
    ]}
    env = {"POD_NAME": name, "POD_NAMESPACE": ns, "KUBECONFIG": kube_env.sidecar_kubeconfig}
    sidecar = start_sidecar(config, tmp_path, env=env)
    try:
        sidecar.wait_state("test_crasher", "Failed")

        def failure_event() -> Any:
            events = core.list_namespaced_event(
                ns, field_selector=f"involvedObject.name={name}").items
            return next((e for e in events if e.reason == "PluginFailed"), None)

        event = sidecar.wait_for(failure_event, timeout=30, what="a PluginFailed event")
        assert event.type == "Warning"
        assert "test_crasher" in event.message and "crash loop" in event.message
        assert event.involved_object.kind == "Pod"
    finally:
        sidecar.stop()
        core.delete_namespaced_pod(name, ns, grace_period_seconds=0)


def test_failure_event_goes_to_the_pod_when_only_http_probe_writes_to_the_cluster(
        kube_env: Any, tmp_path: Path) -> None:
    """The store an Event goes to is the one a plugin config *declares*
    (``storage_configs()``): an http_probe endpoint with InKube storage is enough,
    no hot_update needed (before, the failure landed in the local SQLite store)."""
    from tests.support.game_endpoint import GameEndpoint

    text = (REPO / "config" / "rbac.yaml").read_text()
    kube_env.apply_yaml(text.replace("${POD_NAMESPACE}", kube_env.namespace)
                        .replace("${RESULT_NAMESPACE}", kube_env.namespace))
    ns = kube_env.namespace
    name = f"probe-events-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube_env.admin_api())
    core.create_namespaced_pod(ns, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                                    "spec": {"containers": [{"name": "game", "image": "g:1"}]}})
    game = GameEndpoint()
    game.set("/", body="idle")
    config = {"plugins": [
        {"name": "http_probe", "config": {
            "startDelaySeconds": 0, "probeIntervalSeconds": 0.5,
            "endpoints": [{"url": game.url(), "method": "GET", "timeout": 2,
                           "expectedStatusCode": 200,
                           "storageConfig": {"type": "InKube", "inKube": {
                               "annotationKey": "kidecar.test/probe-state"}}}]}},
        {"name": "test_crasher", "maxRestarts": 1, "backoffSeconds": 0.05,
         "config": {"exitCode": 5, "afterSeconds": 1}},
    ]}
    env = {"POD_NAME": name, "POD_NAMESPACE": ns, "KUBECONFIG": kube_env.sidecar_kubeconfig}
    sidecar = start_sidecar(config, tmp_path, env=env)
    try:
        sidecar.wait_state("test_crasher", "Failed")

        def failure_event() -> Any:
            events = core.list_namespaced_event(
                ns, field_selector=f"involvedObject.name={name}").items
            return next((e for e in events if e.reason == "PluginFailed"), None)

        event = sidecar.wait_for(failure_event, timeout=30, what="a PluginFailed event")
        assert event.type == "Warning" and event.involved_object.kind == "Pod"
        assert "test_crasher" in event.message and "crash loop" in event.message
        # the probe itself wrote to the same pod: the store really is the cluster
        pod = sidecar.wait_for(lambda: (p := core.read_namespaced_pod(name, ns)).metadata
                               .annotations and p, what="the probe's annotation")
        assert pod.metadata.annotations.get("kidecar.test/probe-state") == "idle"
    finally:
        sidecar.stop()
        game.stop()
        core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
