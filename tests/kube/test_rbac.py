"""config/rbac.yaml on a real API server: enough for everything kidecar does, nothing more.

The sidecar authenticates as system:serviceaccount:kidecar-test:kidecar
(kube_env.sidecar_kubeconfig); its only permissions are the applied manifest.
"""

from __future__ import annotations

import calendar
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kidecar_supervisor.storage import result_codec as codec
from kidecar_supervisor.storage.base import (
    DEFAULT_RESULT_CONFIGMAP,
    DEFAULT_RESULT_NAMESPACE,
    JOURNALED,
    WRITTEN,
    MarkerUpdate,
    ResultRecord,
    StorageConfig,
)
from kidecar_supervisor.storage.kube_api import (
    KubeClient,
    KubeError,
    KubeForbidden,
    ResourcePath,
)
from kidecar_supervisor.storage.result_shards import (
    all_shard_names,
    placement_key,
    shard_index,
    shard_name,
)
from kidecar_supervisor.storage.workload import Workload
from tests.support.inkube_support import Admin, store, uid

REPO = Path(__file__).resolve().parents[2]
HOT = "hot_update"
RBAC = REPO / "config" / "rbac.yaml"


def rbac_text(pod_namespace: str, result_namespace: str) -> str:
    text = RBAC.read_text()
    text = text.replace("${POD_NAMESPACE}", pod_namespace)
    text = text.replace("${RESULT_NAMESPACE}", result_namespace)
    assert "${" not in "\n".join(line for line in text.splitlines()
                                 if not line.lstrip().startswith("#"))
    return text


#: a namespace no RBAC manifest binds (other tests apply rbac.yaml with other namespaces)
UNBOUND_NS = "kidecar-unbound"


@pytest.fixture(scope="module")
def rbac(kube_env) -> list[dict[str, Any]]:
    Admin(kube_env).ensure_namespace(UNBOUND_NS)
    return kube_env.apply_yaml(rbac_text(kube_env.namespace, DEFAULT_RESULT_NAMESPACE))


def _sidecar_requests(kube_env, since: float) -> list[dict[str, Any]]:
    out = []
    for ev in kube_env.audit_events(user=kube_env.sidecar_user):
        stamp = calendar.timegm(time.strptime(ev["requestReceivedTimestamp"][:19],
                                              "%Y-%m-%dT%H:%M:%S"))
        if stamp >= since - 1:
            out.append(ev)
    return out


def test_manifest_is_least_privilege(rbac):
    kinds = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) for o in rbac}
    assert ("ServiceAccount", "kidecar", "kidecar-test") in kinds
    assert ("RoleBinding", "kidecar-result-kidecar-test", "kube-system") in kinds
    assert not any(k[0].startswith("Cluster") for k in kinds), "no cluster-wide grants"
    for obj in rbac:
        for rule in obj.get("rules", []):
            assert "*" not in rule["verbs"] and "*" not in rule["resources"]
            assert set(rule["verbs"]) <= {"get", "patch", "create", "list", "watch"}, rule
            if {"list", "watch"} & set(rule["verbs"]):
                # the desired-version watch of the sidecar's own pod, nothing else
                assert rule["resources"] == ["pods"] and obj["kind"] == "Role", rule
            if "patch" in rule["verbs"] and rule["resources"] == ["configmaps"]:
                # patch only on the fixed shard names, never on other ConfigMaps
                assert rule["resourceNames"] == all_shard_names(DEFAULT_RESULT_CONFIGMAP)


@pytest.mark.slow
def test_sidecar_token_can_do_everything_the_store_does(kube_env, rbac, tmp_path):
    admin = Admin(kube_env)
    ns = kube_env.namespace
    name = uid("rbac")
    # the pod's shard (its name may look like rbac-<ordinal>: placement_key decides)
    shard = shard_name(DEFAULT_RESULT_CONFIGMAP,
                       shard_index(placement_key(ns, name, Workload("GameServerSet", "rbac"))))
    admin.delete_configmap(shard, DEFAULT_RESULT_NAMESPACE)  # test create
    admin.pod(name, ns, labels={"game.kruise.io/owner-gss": "rbac"}, owner=("GameServer", name))
    admin.gameserver(name, ns, {"containers": [{"name": "game", "image": "game:1"}]})
    started = time.time()
    kc = kube_env.sidecar_kubeconfig
    s = store(StorageConfig(type="InKube", label_key="hot-version"), name, ns, tmp_path, kc)
    s_list = store(StorageConfig(type="InKube", json_path="/spec/containers/0/image"),
                   name, ns, tmp_path, kc)
    try:
        late = ResultRecord(plugin=HOT, version="v0", url="u0", timestamp=time.time() - 3600)
        assert s.record_result(late) == WRITTEN  # conditional path: create, get + patch
        assert s.record_result(ResultRecord(plugin=HOT, version="v1", url="u1")) == WRITTEN
        assert s.record_result(ResultRecord(plugin=HOT, version="v2", success=False)) == WRITTEN
        assert s.latest_for_pod(HOT).version == "v1"
        assert s.latest_for_workload(HOT).version == "v1"
        assert s.apply_markers(MarkerUpdate(labels={"idle": "true"}, annotations={"a": "b"},
                                            target_value="WaitToBeDeleted")) == WRITTEN
        assert s_list.apply_markers(MarkerUpdate(target_value="game:2")) == WRITTEN
        s.emit_event("ProbeFailed", "no answer", warning=True)
        s.emit_event("ProbeFailed", "no answer", warning=True)  # aggregated: patch
        assert len(s.journal) == 0

        assert admin.get_gameserver(name, ns)["spec"]["opsState"] == "WaitToBeDeleted"
        assert admin.get_gameserver(name, ns)["spec"]["containers"][0]["image"] == "game:2"
        cm = admin.configmap(shard, DEFAULT_RESULT_NAMESPACE)
        assert codec.pod_key(HOT, ns, name) in cm["data"]
        probe = [e for e in admin.events_for(name, ns) if e["reason"] == "ProbeFailed"]
        assert len(probe) == 1 and probe[0]["count"] == 2

        used = _sidecar_requests(kube_env, started)
        denied = [(e["verb"], e["objectRef"].get("resource"), e["responseStatus"]["code"])
                  for e in used if e["responseStatus"]["code"] in (401, 403)]
        assert not denied, denied
        verbs = {(e["verb"], e["objectRef"].get("resource")) for e in used if "objectRef" in e}
        assert verbs <= {("get", "pods"), ("patch", "pods"), ("create", "events"),
                         ("patch", "events"), ("get", "gameservers"), ("patch", "gameservers"),
                         ("get", "configmaps"), ("patch", "configmaps"),
                         ("create", "configmaps")}, verbs
    finally:
        s.close()
        s_list.close()


@pytest.mark.parametrize("method, path, body", [
    ("DELETE", "/api/v1/namespaces/kidecar-test/pods/any", None),
    # the desired-version watch is granted in the pods' namespace only
    ("GET", "/api/v1/namespaces/default/pods", None),
    ("GET", f"/api/v1/namespaces/{UNBOUND_NS}/pods?watch=1&timeoutSeconds=1", None),
    ("GET", "/api/v1/pods?watch=1&timeoutSeconds=1", None),
    ("GET", "/api/v1/namespaces/kidecar-test/secrets?watch=1&timeoutSeconds=1", None),
    ("GET", "/api/v1/namespaces/kidecar-test/secrets", None),
    ("GET", "/api/v1/nodes", None),
    ("PATCH", f"/api/v1/namespaces/{UNBOUND_NS}/configmaps/sidecar-result", {"data": {"a": "b"}}),
    ("POST", f"/api/v1/namespaces/{UNBOUND_NS}/configmaps", {"metadata": {"name": "x"}}),
    ("PATCH", "/api/v1/namespaces/kube-system/configmaps/coredns", {"data": {"a": "b"}}),
    # the old single ConfigMap is only read now; a name past the last shard is nobody's
    ("PATCH", "/api/v1/namespaces/kube-system/configmaps/sidecar-result", {"data": {"a": "b"}}),
    ("PATCH", "/api/v1/namespaces/kube-system/configmaps/sidecar-result-1024",
     {"data": {"a": "b"}}),
    ("PATCH", f"/api/v1/namespaces/{UNBOUND_NS}/configmaps/sidecar-result-0001",
     {"data": {"a": "b"}}),
    ("DELETE", "/api/v1/namespaces/kube-system/configmaps/sidecar-result", None),
    ("PATCH", "/api/v1/namespaces/default/pods/any", {"metadata": {}}),
    ("DELETE", "/apis/game.kruise.io/v1alpha1/namespaces/kidecar-test/gameservers/any", None),
])
def test_sidecar_token_is_denied_what_it_does_not_need(kube_env, rbac, method, path, body):
    s = kube_env.session(as_admin=False)
    r = s.request(method, kube_env.server + path,
                  data=None if body is None else json.dumps(body),
                  headers={"Content-Type": "application/merge-patch+json" if method == "PATCH"
                           else "application/json"}, timeout=30)
    assert r.status_code == 403, (r.status_code, r.text[:300])


def test_a_403_names_the_missing_verb_and_resource(kube_env, rbac, tmp_path, caplog):
    admin = Admin(kube_env)
    ns, name = kube_env.namespace, uid("deny")
    admin.pod(name, ns)
    cfg = StorageConfig(type="InKube", result_configmap=DEFAULT_RESULT_CONFIGMAP,
                        result_namespace=UNBOUND_NS)  # no RoleBinding there
    s = store(cfg, name, ns, tmp_path, kube_env.sidecar_kubeconfig)
    try:
        with caplog.at_level(logging.ERROR, logger="kidecar.storage.kube"):
            status = s.record_result(ResultRecord(plugin=HOT, version="v1", url="u1"))
        # the pod annotation and the Event were written; the ConfigMap part waits
        assert status == JOURNALED
        assert json.loads(admin.get_pod(name, ns)["metadata"]["annotations"][
            codec.DEFAULT_ANNOTATION_KEY])["version"] == "v1"
        entries = [e for _, e in s.journal.entries()]
        assert entries and entries[0]["parts"] == ["configmap"]  # the Event went on
        assert [e["reason"] for e in admin.events_for(name, ns)] == ["HotUpdateSucceeded"]
        lines = [r.getMessage() for r in caplog.records]
        assert any(f"may not patch configmaps in namespace \"{UNBOUND_NS}\"" in line
                   and "config/rbac.yaml" in line for line in lines), lines
    finally:
        s.close()


def test_in_cluster_config_uses_the_service_account_token(kube_env, rbac, tmp_path,
                                                          monkeypatch):
    admin = Admin(kube_env)
    ns, name = kube_env.namespace, uid("incluster")
    admin.pod(name, ns)
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(kube_env.sidecar_token)
    shutil.copy(kube_env.ca_file, sa / "ca.crt")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(kube_env.apiserver_port))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "not-used"))
    client = KubeClient.from_environment(service_account_dir=str(sa))
    assert client.get(ResourcePath("", "v1", "pods", ns, name))["metadata"]["name"] == name
    with pytest.raises(KubeForbidden):  # it really is the ServiceAccount
        client.get(ResourcePath("", "v1", "secrets", ns))


def test_in_cluster_token_rotation_is_picked_up(kube_env, rbac, tmp_path, monkeypatch):
    admin = Admin(kube_env)
    ns, name = kube_env.namespace, uid("rotate")
    admin.pod(name, ns)
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("expired-token")
    shutil.copy(kube_env.ca_file, sa / "ca.crt")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(kube_env.apiserver_port))
    client = KubeClient.from_environment(service_account_dir=str(sa))
    with pytest.raises(KubeForbidden, match="401"):
        client.get(ResourcePath("", "v1", "pods", ns, name))
    (sa / "token").write_text(kube_env.sidecar_token + "\n")  # the kubelet rotated it
    assert client.get(ResourcePath("", "v1", "pods", ns, name))["metadata"]["name"] == name


def test_in_cluster_client_does_not_load_the_kubernetes_package(kube_env, tmp_path):
    """The storage process in a pod stays small: urllib3 only (~20 MiB less)."""
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(kube_env.sidecar_token)
    shutil.copy(kube_env.ca_file, sa / "ca.crt")
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from kidecar_supervisor.storage.kube_api import KubeClient, ResourcePath\n"
        "c = KubeClient.from_environment(service_account_dir=sys.argv[2])\n"
        "c.resources('', 'v1')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))\n"
    )
    env = {**os.environ, "KUBERNETES_SERVICE_HOST": "127.0.0.1",
           "KUBERNETES_SERVICE_PORT": str(kube_env.apiserver_port)}
    out = subprocess.run([sys.executable, "-c", script, str(REPO), str(sa)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_kubeconfig_fallback_and_a_clear_error_without_config(kube_env, rbac, tmp_path,
                                                              monkeypatch):
    admin = Admin(kube_env)
    ns, name = kube_env.namespace, uid("kcfg")
    admin.pod(name, ns)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", kube_env.sidecar_kubeconfig)
    client = KubeClient.from_environment()
    assert client.get(ResourcePath("", "v1", "pods", ns, name))["metadata"]["name"] == name
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(KubeError, match="not in a cluster and kubeconfig .*missing"):
        KubeClient.from_environment()


def test_sidecar_token_watches_its_own_pod_for_the_desired_version(kube_env, rbac):
    """The watch the storage process runs (pod_watch) works with exactly rbac.yaml: a
    list and a watch of pods with fieldSelector metadata.name=<pod>, no 403."""
    from kidecar_supervisor.storage.pod_watch import PodWatch

    admin = Admin(kube_env)
    ns = kube_env.namespace
    name = uid("watch")
    admin.pod(name, ns)
    started = time.time()
    client = KubeClient.from_environment(kubeconfig=kube_env.sidecar_kubeconfig)
    watch = PodWatch(client, ns, name, watch_seconds=30)
    watch.start()
    try:
        first = watch.wait("kidecar.io/desired-version", 0, 15)
        assert first.synced and first.value is None
        admin.call("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}",
                   {"metadata": {"annotations": {"kidecar.io/desired-version": "{}"}}},
                   content_type="application/merge-patch+json")
        second = watch.wait("kidecar.io/desired-version", first.revision, 15)
        assert second.value == "{}"
        assert watch.errors == 0 and watch.lists == 1
    finally:
        watch.stop()
    used = [e for e in _sidecar_requests(kube_env, started)
            if e.get("objectRef", {}).get("resource") == "pods" and name in e["requestURI"]]
    assert {e["verb"] for e in used} >= {"list", "watch"}
    assert all(e["responseStatus"]["code"] < 400 for e in used), [
        (e["verb"], e["requestURI"], e["responseStatus"]) for e in used]
    assert all(f"metadata.name%3D{name}" in e["requestURI"] for e in used
               if e["verb"] in ("list", "watch")), [e["requestURI"] for e in used]
