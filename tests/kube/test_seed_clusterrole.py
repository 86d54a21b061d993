"""The seeds' RBAC (issue 13 §3): a ClusterRole with pods and configmaps only.

The Go kidecar's manifests grant ``pods`` and ``configmaps`` (create, delete,
get, list, patch, update, watch) through a ClusterRole bound to ServiceAccount
``sidecar-sa``. Under exactly that, kidecar's hot-update results, recovery and
pod markers work; Events are best effort (a 403 turns them off for the
process with one warning and a metric, nothing about them is journaled); a
GameServer write refused with 403 says so once per cause.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from kidecar_supervisor.storage import inkube
from kidecar_supervisor.storage import result_codec as codec
from kidecar_supervisor.storage.base import (
    WRITTEN,
    MarkerUpdate,
    ResultRecord,
    StorageConfig,
    recorded_parts,
)
from tests.support.inkube_support import Admin, store, uid
from tools import kube_env as ke

HOT = "hot_update"
SEED_NS = "kidecar-seed"
SEED_SA = "sidecar-sa"

#: the seeds' ClusterRole, verbatim in what it grants
SEED_RBAC = f"""
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {SEED_SA}
  namespace: {SEED_NS}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: kidecar-seed-role
rules:
  - apiGroups: [""]
    resources: [pods, configmaps]
    verbs: [create, delete, get, list, patch, update, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kidecar-seed-rolebinding
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: kidecar-seed-role
subjects:
  - kind: ServiceAccount
    name: {SEED_SA}
    namespace: {SEED_NS}
"""


@pytest.fixture(scope="module")
def seed_kubeconfig(kube_env, tmp_path_factory) -> str:
    """A kubeconfig with a TokenRequest token of ``sidecar-sa`` under the seeds' RBAC."""
    admin = Admin(kube_env)
    admin.ensure_namespace(SEED_NS)
    applied = kube_env.apply_yaml(SEED_RBAC)
    role = next(o for o in applied if o["kind"] == "ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods", "configmaps"],
                              "verbs": ["create", "delete", "get", "list", "patch", "update",
                                        "watch"]}]
    token = admin.call("POST", f"/api/v1/namespaces/{SEED_NS}/serviceaccounts/{SEED_SA}/token",
                       {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                        "spec": {"expirationSeconds": 7200}})["status"]["token"]
    path = tmp_path_factory.mktemp("seed") / "kubeconfig"
    path.write_text(ke._kubeconfig(kube_env.server, Path(kube_env.ca_file),
                                   f"system:serviceaccount:{SEED_NS}:{SEED_SA}", token))
    return str(path)


def _seed_cfg(**kw: Any) -> StorageConfig:
    """The seed's hot_update storageConfig: InKube with its annotationKey."""
    return StorageConfig(type="InKube", annotation_key=codec.DEFAULT_ANNOTATION_KEY, **kw)


def test_the_seed_hot_update_scenario_under_the_seed_clusterrole(kube_env, seed_kubeconfig,
                                                                 tmp_path, caplog):
    admin = Admin(kube_env)
    name = uid("seed")
    admin.pod(name, SEED_NS, labels={"game.kruise.io/owner-gss": "seed"})
    s = store(_seed_cfg(), name, SEED_NS, tmp_path / "a", seed_kubeconfig)
    try:
        with caplog.at_level(logging.DEBUG, logger="kidecar.storage"):
            outcomes = [s.record_result(ResultRecord(plugin=HOT, version=f"v{i}",
                                                     url=f"http://files/v{i}.tgz"))
                        for i in range(1, 101)]
            s.emit_event("ProbeFailed", "no answer", warning=True)  # off: not even tried
        for outcome in outcomes:
            assert recorded_parts(outcome, "InKube") == {"pod": True, "store": True,
                                                         "event": False}, outcome
        assert len(s.journal) == 0 and s.journal.stats()["failed"] == 0, \
            "no journal growth: Events are not journaled, nothing else waits"
        stats = s.stats()
        assert stats["eventsOff"] is True and stats["pending"] == 0
        warnings = [r.getMessage() for r in caplog.records
                    if "Events are off" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert "resources [events], verbs [create, patch]" in warnings[0]
        assert not [r for r in caplog.records
                    if r.levelno >= logging.ERROR and "events" in r.getMessage()]
        assert admin.events_for(name, SEED_NS) == []
        ann = json.loads(admin.get_pod(name, SEED_NS)["metadata"]["annotations"][
            codec.DEFAULT_ANNOTATION_KEY])
        assert ann["version"] == "v100"
        # pod markers work
        assert s.apply_markers(MarkerUpdate(labels={"gameserver-idle": "true"})) == WRITTEN
        assert admin.get_pod(name, SEED_NS)["metadata"]["labels"]["gameserver-idle"] == "true"
    finally:
        s.close()
    # recovery: the restarted container, and a new pod of the workload
    again = store(_seed_cfg(), name, SEED_NS, tmp_path / "b", seed_kubeconfig)
    new = uid("seed-new")
    admin.pod(new, SEED_NS, labels={"game.kruise.io/owner-gss": "seed"})
    fresh = store(_seed_cfg(), new, SEED_NS, tmp_path / "c", seed_kubeconfig)
    try:
        mine = again.latest_for_pod(HOT)
        assert mine is not None and (mine.version, mine.url) == ("v100", "http://files/v100.tgz")
        theirs = fresh.latest_for_workload(HOT)
        assert theirs is not None and theirs.version == "v100"
    finally:
        again.close()
        fresh.close()


def test_a_gameserver_403_is_said_once_per_cause(kube_env, seed_kubeconfig, tmp_path, caplog):
    admin = Admin(kube_env)
    name = uid("seedgs")
    admin.pod(name, SEED_NS)
    s = store(_seed_cfg(), name, SEED_NS, tmp_path, seed_kubeconfig)
    try:
        with caplog.at_level(logging.INFO, logger="kidecar.storage"):
            for state in ("None", "WaitToBeDeleted", "None", "Allocated"):
                s.apply_markers(MarkerUpdate(labels={"state": state}, target_value=state))
        said = [r.getMessage() for r in caplog.records
                if "may not" in r.getMessage() and "gameservers" in r.getMessage()]
        assert len(said) == 1, said
        assert "grant verb 'get'" in said[0] or "grant verb 'patch'" in said[0]
        # the pod's own markers were written all along
        assert admin.get_pod(name, SEED_NS)["metadata"]["labels"]["state"] == "Allocated"
        journaled = [r for r in caplog.records if r.levelno >= logging.WARNING
                     and "journaled" in r.getMessage()]
        assert len(journaled) == 1, [r.getMessage() for r in journaled]
        # the GameServer writes wait in order (given up after FORBIDDEN_GIVE_UP)
        assert [e["target_value"] for _, e in s.journal.entries()] == [
            "None", "WaitToBeDeleted", "None", "Allocated"]
    finally:
        s.close()


def _grant_events(kube_env: Any, namespace: str) -> None:
    """What fixing the RBAC by hand looks like: Events allowed in one namespace."""
    kube_env.apply_yaml(f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: kidecar-events, namespace: {namespace}}}
rules:
  - apiGroups: [""]
    resources: [events]
    verbs: [create, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: kidecar-events, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: kidecar-events}}
subjects:
  - {{kind: ServiceAccount, name: {SEED_SA}, namespace: {SEED_NS}}}
""")


def test_events_refused_for_a_while_come_back_without_waiting_ten_minutes(
        kube_env, seed_kubeconfig, tmp_path, monkeypatch) -> None:
    """A 403 on Events turns them off, then one is tried again after a short wait
    that doubles with each refusal (10 s, 20 s, ... 10 min; 0.5 s here): an API
    server whose authorizer answered 403 for a moment after a restart, or an RBAC
    fixed by hand, gets Events back at once instead of 10 minutes later."""
    monkeypatch.setattr(inkube, "EVENTS_FIRST_RETRY", 0.5)
    namespace = "kidecar-seed-events"
    admin = Admin(kube_env)
    admin.ensure_namespace(namespace)
    name = uid("events")
    admin.pod(name, namespace)
    s = store(_seed_cfg(), name, namespace, tmp_path, seed_kubeconfig)
    try:
        def result(n: int) -> dict[str, bool]:
            outcome = s.record_result(ResultRecord(plugin=HOT, version=f"v{n}",
                                                   url=f"http://files/v{n}.tgz"))
            return recorded_parts(outcome, "InKube")
        assert result(1) == {"pod": True, "store": True, "event": False}
        assert s.stats()["eventsOff"] is True
        _grant_events(kube_env, namespace)
        n, deadline = 1, time.monotonic() + 30
        while True:
            n += 1
            parts = result(n)
            if parts["event"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert parts == {"pod": True, "store": True, "event": True}, (n, parts)
        assert s.stats()["eventsOff"] is False
        assert any(f"v{n}" in e.get("message", "") for e in admin.events_for(name, namespace))
    finally:
        s.close()
