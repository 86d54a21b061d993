"""Recovery from records older writers left (issue 12 §1, issue 13 §2), on the real API.

Nothing here is rewritten: the single result ConfigMap and the Go kidecar's
annotation are read; new results go to the shards.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from kidecar_supervisor.storage import result_codec as codec
from kidecar_supervisor.storage.base import ResultRecord, StorageConfig
from kidecar_supervisor.storage.workload import Workload
from tests.support.inkube_support import Admin, store, uid

HOT = "hot_update"


@pytest.fixture
def admin(kube_env) -> Admin:
    return Admin(kube_env)


def _cfg(cm: str, ns: str) -> StorageConfig:
    return StorageConfig(type="InKube", result_configmap=cm, result_namespace=ns)


def _legacy_configmap(admin: Admin, cm: str, ns: str, data: dict[str, str]) -> None:
    admin.call("POST", f"/api/v1/namespaces/{ns}/configmaps",
               {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": cm},
                "data": data})


def _go_value(versions: dict[str, str]) -> str:
    """What the Go kidecar's yaml.Marshal wrote: {hot_update: {version: url}}."""
    lines = ["hot_update:"] + [f"    {v}: {u}" for v, u in versions.items()]
    return "\n".join(lines) + "\n"


def test_a_pod_switched_from_the_go_sidecar_comes_back_on_its_version(kube_env, admin,
                                                                      tmp_path):
    ns, cm = kube_env.namespace, uid("gores")
    gss = uid("gogss")
    pod = f"{gss}-0"
    _legacy_configmap(admin, cm, ns, {
        f"{ns}-{pod}": _go_value({"v9": "http://files/v9.zip", "v10": "http://files/v10.zip"}),
        f"{ns}-{gss}-1": _go_value({"v11": "http://files/v11.zip"}),
        f"{ns}-{gss}x-0": _go_value({"v99": "http://files/not-this-workload.zip"}),
    })
    before = admin.configmap(cm, ns)
    # the Go sidecar's annotation survives the container restart (the pod object stays)
    admin.pod(pod, ns, labels={"game.kruise.io/owner-gss": gss},
              annotations={codec.DEFAULT_ANNOTATION_KEY: "v10: Update success"})
    s = store(_cfg(cm, ns), pod, ns, tmp_path / "a", kube_env.admin_kubeconfig)
    try:
        mine = s.latest_for_pod(HOT)
        assert mine is not None and (mine.version, mine.url) == ("v10", "http://files/v10.zip")
        # a NEW pod of the workload: the newest version (by version order) of its pods
        new = f"{gss}-2"
        admin.pod(new, ns, labels={"game.kruise.io/owner-gss": gss})
        fresh = store(_cfg(cm, ns), new, ns, tmp_path / "b", kube_env.admin_kubeconfig)
        try:
            theirs = fresh.latest_for_workload(HOT)
            assert theirs is not None and (theirs.version, theirs.url) == (
                "v11", "http://files/v11.zip")
            assert fresh.latest_for_pod(HOT) is None  # it has none of its own
        finally:
            fresh.close()
        # after kidecar's first own result the shards answer; the Go records stay as they were
        s.record_result(ResultRecord(plugin=HOT, version="v12", url="http://files/v12.zip"))
        assert s.latest_for_workload(HOT).version == "v12"
        assert admin.configmap(cm, ns)["data"] == before["data"], "never rewritten"
    finally:
        s.close()


def test_a_go_pod_recreated_with_its_name_finds_its_own_version(kube_env, admin, tmp_path):
    """No annotation (a new pod object), only the Go kidecar's <ns>-<pod> key."""
    ns, cm = kube_env.namespace, uid("gores")
    gss = uid("gogss")
    pod = f"{gss}-3"
    _legacy_configmap(admin, cm, ns, {
        f"{ns}-{pod}": _go_value({"v2": "http://files/v2.zip", "v10": "http://files/v10.zip",
                                   "v9": "http://files/v9.zip"})})
    admin.pod(pod, ns, labels={"game.kruise.io/owner-gss": gss})
    s = store(_cfg(cm, ns), pod, ns, tmp_path, kube_env.admin_kubeconfig)
    try:
        got = s.latest_for_pod(HOT)
        assert got is not None and (got.version, got.url) == ("v10", "http://files/v10.zip")
    finally:
        s.close()


def test_the_old_single_configmap_layout_is_read_for_recovery(kube_env, admin, tmp_path):
    ns, cm = kube_env.namespace, uid("oldres")
    wl = Workload("GameServerSet", uid("old"))
    pod = f"{wl.name}-0"
    rec = ResultRecord(plugin=HOT, version="v7", url="http://files/v7.zip", sha256="ab",
                       timestamp=time.time() - 3600, pod=pod)
    _legacy_configmap(admin, cm, ns, {
        codec.pod_key(HOT, ns, pod): codec.pod_entry(rec),
        codec.workload_key(HOT, ns, wl): codec.workload_entry(rec)})
    admin.pod(pod, ns, labels={"game.kruise.io/owner-gss": wl.name})  # recreated: no annotation
    s = store(_cfg(cm, ns), pod, ns, tmp_path / "a", kube_env.admin_kubeconfig)
    new = f"{wl.name}-1"
    admin.pod(new, ns, labels={"game.kruise.io/owner-gss": wl.name})
    fresh = store(_cfg(cm, ns), new, ns, tmp_path / "b", kube_env.admin_kubeconfig)
    try:
        mine = s.latest_for_pod(HOT)
        assert mine is not None and (mine.version, mine.url, mine.sha256) == (
            "v7", "http://files/v7.zip", "ab")
        theirs = fresh.latest_for_workload(HOT)
        assert theirs is not None and (theirs.version, theirs.url) == ("v7", "http://files/v7.zip")
    finally:
        s.close()
        fresh.close()


def test_a_pod_recreated_with_its_name_finds_its_own_version_in_its_shard(kube_env, admin,
                                                                          tmp_path):
    """OKG GameServerSets keep pod names: the new pod object has no annotation."""
    ns, cm = kube_env.namespace, uid("res")
    gss = uid("keep")
    pod, other = f"{gss}-0", f"{gss}-1"
    labels = {"game.kruise.io/owner-gss": gss}
    admin.pod(pod, ns, labels=labels)
    admin.pod(other, ns, labels=labels)
    s = store(_cfg(cm, ns), pod, ns, tmp_path / "a", kube_env.admin_kubeconfig)
    o = store(_cfg(cm, ns), other, ns, tmp_path / "o", kube_env.admin_kubeconfig)
    try:
        s.record_result(ResultRecord(plugin=HOT, version="v3", url="http://files/v3.zip"))
        s.record_result(ResultRecord(plugin=HOT, version="v4", success=False))
        o.record_result(ResultRecord(plugin=HOT, version="v5", url="http://files/v5.zip"))
    finally:
        s.close()
        o.close()
    admin.call("DELETE", f"/api/v1/namespaces/{ns}/pods/{pod}?gracePeriodSeconds=0")
    _wait_gone(admin, pod, ns)
    admin.pod(pod, ns, labels=labels)  # same name, new object
    again = store(_cfg(cm, ns), pod, ns, tmp_path / "b", kube_env.admin_kubeconfig)
    try:
        mine = again.latest_for_pod(HOT)
        # its own last good version (v3, not the failed v4, not the workload's v5)
        assert mine is not None and (mine.version, mine.url) == ("v3", "http://files/v3.zip")
        assert again.latest_for_workload(HOT).version == "v5"
    finally:
        again.close()


def _wait_gone(admin: Admin, pod: str, ns: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r: Any = admin.s.get(f"{admin.server}/api/v1/namespaces/{ns}/pods/{pod}", timeout=10)
        if r.status_code == 404:
            return
        if r.status_code == 200 and json.loads(r.text)["metadata"].get("finalizers"):
            break
        time.sleep(0.1)
    raise AssertionError(f"pod {pod} not deleted")
