"""The kube_env harness itself: a real kube-apiserver + etcd with the shared CRDs."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests
from kubernetes import client

pytestmark = pytest.mark.kube

CRDS = ["gameservers.game.kruise.io", "gameserversets.game.kruise.io",
        "sidecarsets.apps.kruise.io"]


def _gameserver(name: str, ops_state: object = "None") -> dict:
    return {
        "apiVersion": "game.kruise.io/v1alpha1",
        "kind": "GameServer",
        "metadata": {"name": name},
        "spec": {"opsState": ops_state},
    }


def test_api_ready_and_kubeconfigs_work(kube_env):
    # plain requests with the CA and the admin token
    r = requests.get(kube_env.server + "/readyz", verify=kube_env.ca_file,
                     headers={"Authorization": f"Bearer {kube_env.admin_token}"}, timeout=10)
    assert r.status_code == 200 and r.text == "ok"
    # the Python client through the admin kubeconfig
    api = kube_env.admin_api()
    assert isinstance(api, client.ApiClient)
    assert client.VersionApi(api).get_code().major == "1"
    ns = client.CoreV1Api(api).read_namespace(kube_env.namespace)
    assert ns.metadata.name == "kidecar-test"
    sa = client.CoreV1Api(api).read_namespaced_service_account("kidecar", kube_env.namespace)
    assert sa.metadata.name == "kidecar"
    # the plain kubeconfig loader works with both files
    from kubernetes import config

    for path in (kube_env.admin_kubeconfig, kube_env.sidecar_kubeconfig):
        c = config.new_client_from_config(config_file=path)
        assert client.VersionApi(c).get_code().git_version.startswith("v1.")


def test_all_crds_established(kube_env):
    ext = client.ApiextensionsV1Api(kube_env.admin_api())
    for name in CRDS:
        crd = ext.read_custom_resource_definition(name)
        conds = {c.type: c.status for c in crd.status.conditions}
        assert conds.get("Established") == "True", (name, conds)
        assert conds.get("NamesAccepted") == "True", (name, conds)


def test_gameserver_validates_against_real_schema(kube_env):
    co = client.CustomObjectsApi(kube_env.admin_api())
    name = f"gs-{uuid.uuid4().hex[:6]}"
    args = ("game.kruise.io", "v1alpha1", kube_env.namespace, "gameservers")
    created = co.create_namespaced_custom_object(*args, _gameserver(name, "Maintaining"))
    assert created["spec"]["opsState"] == "Maintaining"
    got = co.get_namespaced_custom_object(*args, name)
    assert got["metadata"]["uid"] == created["metadata"]["uid"]
    # a wrong type for spec.opsState is refused by the CRD's openAPIV3Schema
    with pytest.raises(client.ApiException) as ei:
        co.create_namespaced_custom_object(*args, _gameserver(name + "-bad", 42))
    assert ei.value.status == 422
    assert "spec.opsState" in ei.value.body
    # patching it to a wrong type is refused too
    with pytest.raises(client.ApiException) as ei:
        co.patch_namespaced_custom_object(*args, name, {"spec": {"opsState": {"x": 1}}})
    assert ei.value.status == 422


def test_apply_yaml_helper(kube_env):
    name = f"cm-{uuid.uuid4().hex[:6]}"
    doc = f"""
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}
data:
  a: "1"
---
apiVersion: game.kruise.io/v1alpha1
kind: GameServer
metadata:
  name: {name}
spec:
  opsState: Allocated
"""
    objs = kube_env.apply_yaml(doc, namespace=kube_env.namespace)
    assert [o["kind"] for o in objs] == ["ConfigMap", "GameServer"]
    assert all(o["metadata"]["namespace"] == kube_env.namespace for o in objs)
    cm = client.CoreV1Api(kube_env.admin_api()).read_namespaced_config_map(
        name, kube_env.namespace)
    assert cm.data == {"a": "1"}


def test_sidecar_token_is_the_service_account_without_rbac(kube_env):
    api = kube_env.sidecar_api()
    review = client.AuthenticationV1Api(api).create_self_subject_review(
        client.V1SelfSubjectReview())
    info = review.status.user_info
    assert info.username == "system:serviceaccount:kidecar-test:kidecar"
    assert set(info.groups) >= {"system:serviceaccounts", "system:serviceaccounts:kidecar-test",
                                "system:authenticated"}
    with pytest.raises(client.ApiException) as ei:
        client.CoreV1Api(api).list_namespaced_secret(kube_env.namespace)
    assert ei.value.status == 403
    # plain requests with the sidecar token: same answer
    r = requests.get(f"{kube_env.server}/api/v1/namespaces/{kube_env.namespace}/secrets",
                     verify=kube_env.ca_file,
                     headers={"Authorization": f"Bearer {kube_env.sidecar_token}"}, timeout=10)
    assert r.status_code == 403
    # and the request is in the audit log under the SA user
    events = kube_env.audit_events(user=kube_env.sidecar_user, verbs=["list"])
    assert any(e["objectRef"]["resource"] == "secrets" and e["responseStatus"]["code"] == 403
               for e in events)


def test_audit_log_counts_writes(kube_env):
    co = client.CustomObjectsApi(kube_env.admin_api())
    args = ("game.kruise.io", "v1alpha1", kube_env.namespace, "gameservers")
    name = f"gs-{uuid.uuid4().hex[:6]}"
    co.create_namespaced_custom_object(*args, _gameserver(name))
    for state in ("Allocated", "Maintaining", "None"):
        co.patch_namespaced_custom_object(*args, name, {"spec": {"opsState": state}})
    writes = [e for e in kube_env.audit_events(verbs=["create", "patch"])
              if e.get("objectRef", {}).get("name") == name]
    assert [e["verb"] for e in writes] == ["create", "patch", "patch", "patch"]
    with open(kube_env.audit_log) as f:
        json.loads(f.readline())  # one JSON event per line


def test_api_outage_and_recovery_keeps_objects(kube_env):
    co = client.CustomObjectsApi(kube_env.admin_api())
    args = ("game.kruise.io", "v1alpha1", kube_env.namespace, "gameservers")
    name = f"gs-{uuid.uuid4().hex[:6]}"
    uid = co.create_namespaced_custom_object(*args, _gameserver(name, "Allocated"))[
        "metadata"]["uid"]
    port = kube_env.apiserver_port

    kube_env.stop_apiserver()
    try:
        assert not kube_env.apiserver_running()
        with pytest.raises(requests.ConnectionError) as ei:
            requests.get(kube_env.server + "/readyz", verify=kube_env.ca_file, timeout=5)
        assert "refused" in str(ei.value).lower()
    finally:
        t0 = time.monotonic()
        kube_env.start_apiserver()
    assert time.monotonic() - t0 < 60
    assert kube_env.apiserver_running()
    assert kube_env.apiserver_port == port
    # a fresh client and the old token see the same object
    got = client.CustomObjectsApi(kube_env.admin_api()).get_namespaced_custom_object(*args, name)
    assert got["metadata"]["uid"] == uid and got["spec"]["opsState"] == "Allocated"
    # the context-manager form
    with kube_env.apiserver_outage():
        with pytest.raises(requests.ConnectionError):
            requests.get(kube_env.server + "/readyz", verify=kube_env.ca_file, timeout=5)
    r = kube_env.session().get(kube_env.server + "/readyz", timeout=10)
    assert r.status_code == 200
