"""InKubeStore against a real kube-apiserver (kube_env), plus its client and coalescer.

Objects are created as admin with unique names; the store writes with the
admin kubeconfig here (test_rbac.py checks the same with the sidecar's token).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kidecar_supervisor.storage import result_codec as codec
from kidecar_supervisor.storage.base import (
    JOURNALED,
    WRITTEN,
    MarkerUpdate,
    ResultRecord,
    StorageConfig,
    TargetRef,
    recorded_parts,
)
from kidecar_supervisor.storage.coalesce import Coalescer
from kidecar_supervisor.storage.kube_api import (
    KubeClient,
    KubeForbidden,
    KubeUnavailable,
    ResourcePath,
    RetryPolicy,
)
from kidecar_supervisor.storage.kube_connection import Connection
from kidecar_supervisor.storage.result_shards import SEEN_SUFFIX
from kidecar_supervisor.storage.targets import TargetError
from kidecar_supervisor.storage.workload import Workload
from tests.support.inkube_support import Admin, store, uid

REPO = Path(__file__).resolve().parents[2]
HOT = "hot_update"


def _cfg(result_cm: str, namespace: str, **kw: Any) -> StorageConfig:
    return StorageConfig(type="InKube", result_configmap=result_cm, result_namespace=namespace,
                         **kw)


def _annotation(pod: dict[str, Any], key: str = codec.DEFAULT_ANNOTATION_KEY) -> dict[str, Any]:
    return json.loads(pod["metadata"]["annotations"][key])


@pytest.fixture
def admin(kube_env) -> Admin:
    return Admin(kube_env)


def _shards(admin: Admin, cm: str, ns: str) -> list[dict[str, Any]]:
    """The result shards ``<cm>-<nnnn>`` that exist (result_shards)."""
    items = admin.call("GET", f"/api/v1/namespaces/{ns}/configmaps")["items"]
    return [i for i in items if i["metadata"]["name"].startswith(cm + "-")]


def _results(admin: Admin, cm: str, ns: str) -> dict[str, str]:
    """Every key of every shard: pod keys, workload records and ``.seen`` copies."""
    data: dict[str, str] = {}
    for shard in _shards(admin, cm, ns):
        for key, value in (shard.get("data") or {}).items():
            assert key not in data or key.endswith(SEEN_SUFFIX), f"{key} in two shards"
            data[key] = value
    return data


def _delete_results(admin: Admin, cm: str, ns: str) -> None:
    for shard in _shards(admin, cm, ns):
        admin.delete_configmap(shard["metadata"]["name"], ns)


# -- results -----------------------------------------------------------------------

def test_result_goes_to_annotation_labels_configmap_and_event(kube_env, admin, tmp_path):
    ns, cm, name = kube_env.namespace, uid("res"), uid("gs")
    admin.pod(name, ns, labels={"game.kruise.io/owner-gss": "battle"})
    s = store(_cfg(cm, ns, label_key="example.com/hot-version"), name, ns, tmp_path,
              kube_env.admin_kubeconfig)
    try:
        ok = ResultRecord(plugin=HOT, version="v1.2", url="http://files/v1.2.zip", sha256="ab")
        assert s.record_result(ok) == WRITTEN
        pod = admin.get_pod(name, ns)
        ann = _annotation(pod)
        assert (ann["version"], ann["success"], ann["url"], ann["sha256"]) == \
            ("v1.2", True, "http://files/v1.2.zip", "ab")
        assert ann["workload"] == "GameServerSet/battle" and ann["time"].endswith("Z")
        assert pod["metadata"]["labels"]["example.com/hot-version"] == "v1.2"
        assert pod["metadata"]["labels"]["example.com/hot-version-success"] == "true"

        bad = ResultRecord(plugin=HOT, version="v1.3+rc/1", url="http://files/v1.3.zip",
                           success=False, message="sha256 mismatch")
        assert s.record_result(bad) == WRITTEN
        pod = admin.get_pod(name, ns)
        ann = _annotation(pod)
        assert ann["success"] is False and ann["message"] == "sha256 mismatch"
        assert ann["lastGood"]["version"] == "v1.2"
        assert pod["metadata"]["labels"]["example.com/hot-version"] == "v1.3_rc_1"
        assert pod["metadata"]["labels"]["example.com/hot-version-success"] == "false"

        assert admin.configmap(cm, ns) is None, "the single ConfigMap is no longer written"
        data = _results(admin, cm, ns)
        assert json.loads(data[codec.pod_key(HOT, ns, name)])[:2] == ["v1.3+rc/1", False]
        assert json.loads(data[codec.pod_key(HOT, ns, name)])[3] == "v1.2"  # its last good
        wl = json.loads(data[codec.workload_key(HOT, ns, Workload("GameServerSet", "battle"))])
        assert (wl["version"], wl["url"], wl["pod"]) == ("v1.2", "http://files/v1.2.zip", name)

        events = admin.events_for(name, ns)
        assert [(e["reason"], e["type"]) for e in events] == [
            ("HotUpdateSucceeded", "Normal"), ("HotUpdateFailed", "Warning")]
        assert events[0]["involvedObject"]["uid"] == pod["metadata"]["uid"]
        assert "sha256 mismatch" in events[1]["message"]

        latest = s.latest_for_pod(HOT)
        assert latest is not None and (latest.version, latest.url) == \
            ("v1.2", "http://files/v1.2.zip")
        assert s.latest_for_workload(HOT).version == "v1.2"
    finally:
        s.close()


def test_latest_for_pod_comes_from_the_annotation_after_a_container_restart(
        kube_env, admin, tmp_path):
    ns, cm, name = kube_env.namespace, uid("res"), uid("gs")
    admin.pod(name, ns)
    first = store(_cfg(cm, ns), name, ns, tmp_path / "a", kube_env.admin_kubeconfig)
    first.record_result(ResultRecord(plugin=HOT, version="v7", url="http://f/v7"))
    first.record_result(ResultRecord(plugin=HOT, version="v8", success=False))
    first.close()
    # a restarted container has a fresh state dir: only the pod object remembers
    again = store(_cfg(cm, ns), name, ns, tmp_path / "b", kube_env.admin_kubeconfig)
    try:
        latest = again.latest_for_pod(HOT)
        assert latest is not None and (latest.version, latest.url) == ("v7", "http://f/v7")
        assert again.latest_for_pod("other_plugin") is None
    finally:
        again.close()


def test_latest_for_workload_is_never_another_workloads(kube_env, admin, tmp_path):
    ns, cm = kube_env.namespace, uid("res")
    other_ns = "kidecar-other"
    admin.ensure_namespace(other_ns)
    pods = {
        "a1": (ns, {"game.kruise.io/owner-gss": "alpha"}, None),
        "a2": (ns, {"game.kruise.io/owner-gss": "alpha"}, None),
        "b1": (ns, {"game.kruise.io/owner-gss": "beta"}, None),
        "x1": (other_ns, {"game.kruise.io/owner-gss": "alpha"}, None),  # same name, other ns
        "s1": (ns, {}, ("StatefulSet", "alpha")),  # same name, other kind
    }
    names = {k: uid(k) for k in pods}
    stores = {}
    for key, (pod_ns, labels, owner) in pods.items():
        admin.pod(names[key], pod_ns, labels=labels, owner=owner)
        stores[key] = store(_cfg(cm, ns), names[key], pod_ns, tmp_path / key,
                            kube_env.admin_kubeconfig)
    try:
        stores["a1"].record_result(ResultRecord(plugin=HOT, version="v1", url="u1"))
        stores["a2"].record_result(ResultRecord(plugin=HOT, version="v2", url="u2"))
        stores["a2"].record_result(ResultRecord(plugin=HOT, version="v3", success=False))
        stores["b1"].record_result(ResultRecord(plugin=HOT, version="v9", url="u9"))
        assert stores["x1"].latest_for_workload(HOT) is None
        assert stores["s1"].latest_for_workload(HOT) is None
        # a NEW pod of alpha comes back on the newest version any alpha pod reached
        new = uid("a3")
        admin.pod(new, ns, labels={"game.kruise.io/owner-gss": "alpha"})
        s3 = store(_cfg(cm, ns), new, ns, tmp_path / "a3", kube_env.admin_kubeconfig)
        stores["a3"] = s3
        got = s3.latest_for_workload(HOT)
        assert got is not None and (got.version, got.url) == ("v2", "u2")
        assert got.workload == "GameServerSet/alpha"
        assert stores["b1"].latest_for_workload(HOT).version == "v9"
    finally:
        for s in stores.values():
            s.close()


def test_a_late_result_does_not_roll_the_workload_back(kube_env, admin, tmp_path):
    ns, cm = kube_env.namespace, uid("res")
    labels = {"game.kruise.io/owner-gss": "late"}
    p1, p2 = uid("p1"), uid("p2")
    admin.pod(p1, ns, labels=labels)
    admin.pod(p2, ns, labels=labels)
    s1 = store(_cfg(cm, ns), p1, ns, tmp_path / "1", kube_env.admin_kubeconfig)
    s2 = store(_cfg(cm, ns), p2, ns, tmp_path / "2", kube_env.admin_kubeconfig)
    try:
        s2.record_result(ResultRecord(plugin=HOT, version="v5", url="u5"))
        # p1's result from 10 minutes ago arrives now (e.g. replayed after an outage)
        old = ResultRecord(plugin=HOT, version="v4", url="u4", timestamp=time.time() - 600)
        assert s1.record_result(old) == WRITTEN
        data = _results(admin, cm, ns)
        assert json.loads(data[codec.pod_key(HOT, ns, p1)])[0] == "v4"
        assert s1.latest_for_workload(HOT).version == "v5"
    finally:
        s1.close()
        s2.close()


def test_a_delayed_recent_result_never_moves_the_workload_back(kube_env, admin, tmp_path):
    """A v2 from 10 s ago (a slow direct write) arrives after another pod's v3."""
    ns, cm = kube_env.namespace, uid("res")
    labels = {"game.kruise.io/owner-gss": "delayed"}
    p1, p2 = uid("p1"), uid("p2")
    admin.pod(p1, ns, labels=labels)
    admin.pod(p2, ns, labels=labels)
    s1 = store(_cfg(cm, ns), p1, ns, tmp_path / "1", kube_env.admin_kubeconfig)
    s2 = store(_cfg(cm, ns), p2, ns, tmp_path / "2", kube_env.admin_kubeconfig)
    wk = codec.workload_key(HOT, ns, Workload("GameServerSet", "delayed"))
    try:
        assert s2.record_result(ResultRecord(plugin=HOT, version="v3", url="u3")) == WRITTEN
        late = ResultRecord(plugin=HOT, version="v2", url="u2", timestamp=time.time() - 10)
        assert s1.record_result(late) == WRITTEN
        data = _results(admin, cm, ns)
        assert json.loads(data[codec.pod_key(HOT, ns, p1)])[0] == "v2"
        assert json.loads(data[wk])["version"] == "v3"
        # a newer result still advances it, and the ConfigMap deleted meanwhile is recreated
        assert s1.record_result(ResultRecord(plugin=HOT, version="v4", url="u4")) == WRITTEN
        assert json.loads(_results(admin, cm, ns)[wk])["version"] == "v4"
        _delete_results(admin, cm, ns)
        assert s2.record_result(ResultRecord(plugin=HOT, version="v5", url="u5")) == WRITTEN
        assert json.loads(_results(admin, cm, ns)[wk])["version"] == "v5"
    finally:
        s1.close()
        s2.close()


def test_a_rollout_of_one_version_writes_the_workload_entry_once(kube_env, admin, tmp_path):
    """The second pod reporting the same version finds it there: no second workload write."""
    ns, cm = kube_env.namespace, uid("res")
    labels = {"game.kruise.io/owner-gss": "rollout"}
    p1, p2 = uid("p1"), uid("p2")
    admin.pod(p1, ns, labels=labels)
    admin.pod(p2, ns, labels=labels)
    s1 = store(_cfg(cm, ns), p1, ns, tmp_path / "1", kube_env.admin_kubeconfig)
    s2 = store(_cfg(cm, ns), p2, ns, tmp_path / "2", kube_env.admin_kubeconfig)
    wk = codec.workload_key(HOT, ns, Workload("GameServerSet", "rollout"))
    try:
        assert s1.record_result(ResultRecord(plugin=HOT, version="v6", url="u6")) == WRITTEN
        assert s2.record_result(ResultRecord(plugin=HOT, version="v6", url="u6")) == WRITTEN
        data = _results(admin, cm, ns)
        assert json.loads(data[wk])["pod"] == p1  # written once, by the first pod
        assert json.loads(data[codec.pod_key(HOT, ns, p2)])[0] == "v6"
        assert s2.latest_for_workload(HOT).version == "v6"
    finally:
        s1.close()
        s2.close()


def test_the_workload_entry_is_swapped_only_if_unchanged(kube_env, admin, tmp_path):
    """Another pod writes between our read and our write: we compare again, never clobber."""
    from kidecar_supervisor.storage.result_configmap import ResultConfigMap
    ns, cm = kube_env.namespace, uid("res")
    client = KubeClient.from_environment(kubeconfig=kube_env.admin_kubeconfig)
    rcm = ResultConfigMap(client, Coalescer())
    wl = Workload("GameServerSet", "cas")
    wk = codec.workload_key(HOT, ns, wl)
    now = time.time()
    try:
        rcm.write(cm, ns, ns, wl, ResultRecord(plugin=HOT, version="v1", pod="a",
                                               timestamp=now - 5))
        stale = admin.configmap(cm, ns)
        # someone else moves it to v9 after we read ``stale``
        admin.call("PATCH", f"/api/v1/namespaces/{ns}/configmaps/{cm}",
                   {"data": {wk: codec.workload_entry(ResultRecord(
                       plugin=HOT, version="v9", pod="b", timestamp=now))}},
                   content_type="application/merge-patch+json")
        mine = ResultRecord(plugin=HOT, version="v2", pod="a", timestamp=now - 1)
        rcm._advance_workload(rcm.path(cm, ns), wk, mine, stale)
        assert json.loads(admin.configmap(cm, ns)["data"][wk])["version"] == "v9"
    finally:
        client.close()


@pytest.mark.slow
def test_200_concurrent_writers_lose_no_entry(kube_env, admin, tmp_path):
    ns, cm = kube_env.namespace, uid("res")
    names = [f"{uid('conc')}" for _ in range(200)]
    labels = {"game.kruise.io/owner-gss": "crowd"}
    creators = [threading.Thread(target=admin.pod, args=(n, ns), kwargs={"labels": labels})
                for n in names]
    for t in creators:
        t.start()
    for t in creators:
        t.join()
    stores = [store(_cfg(cm, ns), n, ns, tmp_path / n, kube_env.admin_kubeconfig)
              for n in names]
    barrier = threading.Barrier(len(stores))
    results: dict[str, str] = {}
    results_time: dict[str, float] = {}

    def write(i: int) -> None:
        stores[i].latest_for_pod(HOT)  # warm: pod read, so the writes start together
        barrier.wait()
        record = ResultRecord(plugin=HOT, version=f"v1.{i}", url=f"http://f/{i}")
        results_time[names[i]] = record.timestamp
        results[names[i]] = stores[i].record_result(record)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(stores))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # a slow machine may time a request out under this contention: then it is
        # journaled and written by the replayer; either way no entry may be lost
        assert set(results.values()) <= {WRITTEN, JOURNALED} and len(results) == 200
        assert all(s.flush(60) for s in stores)
        data = _results(admin, cm, ns)
        for i, n in enumerate(names):
            assert json.loads(data[codec.pod_key(HOT, ns, n)])[0] == f"v1.{i}"
        wk = codec.workload_key(HOT, ns, Workload("GameServerSet", "crowd"))
        assert wk in data
        others = set(data) - {codec.pod_key(HOT, ns, n) for n in names} - {wk}
        assert all(k.endswith(SEEN_SUFFIX) for k in others), others  # nothing else, no loss
        # the workload record names the newest of the 200 results
        newest = max(range(200), key=lambda i: (results_time[names[i]], i))
        assert json.loads(data[wk])["timestamp"] >= results_time[names[newest]] - 0.001
    finally:
        for s in stores:
            s.close()


@pytest.mark.slow
def test_a_full_configmap_is_pruned_oldest_pod_entries_first(kube_env, admin, tmp_path):
    ns, cm = kube_env.namespace, uid("res")
    now = int(time.time())
    long_ns = "n" * 40  # long names: 9,500 entries of ~100 bytes = past the threshold
    data = {codec.pod_key(HOT, long_ns, f"pod-{'x' * 30}-{i}"): codec.pod_entry(
        ResultRecord(plugin=HOT, version="v1", timestamp=now - 100_000 + i))
        for i in range(9_500)}
    keep_wl = codec.workload_key(HOT, long_ns, Workload("GameServerSet", "old"))
    data[keep_wl] = codec.workload_entry(ResultRecord(plugin=HOT, version="v1", timestamp=1))
    assert codec.data_size(data) > codec.PRUNE_ABOVE
    admin.call("POST", f"/api/v1/namespaces/{ns}/configmaps",
               {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": cm}, "data": {}})
    items = list(data.items())
    for start in range(0, len(items), 2000):
        admin.call("PATCH", f"/api/v1/namespaces/{ns}/configmaps/{cm}",
                   {"data": dict(items[start:start + 2000])},
                   content_type="application/merge-patch+json")
    # the single-ConfigMap writer (the old layout, still used by bench_kube_writes)
    from kidecar_supervisor.storage.result_configmap import ResultConfigMap
    name = uid("new")
    client = KubeClient.from_environment(kubeconfig=kube_env.admin_kubeconfig)
    rcm = ResultConfigMap(client, Coalescer())
    wl = Workload("GameServerSet", "fresh")
    try:
        rcm.write(cm, ns, ns, wl, ResultRecord(plugin=HOT, version="v2", url="u", pod=name))
        stored = admin.configmap(cm, ns)
        assert codec.data_size(stored["data"]) <= codec.PRUNE_TO
        assert keep_wl in stored["data"], "workload entries are never pruned"
        assert codec.pod_key(HOT, ns, name) in stored["data"]
        assert codec.pod_key(HOT, long_ns, f"pod-{'x' * 30}-0") not in stored["data"]
        assert codec.pod_key(HOT, long_ns, f"pod-{'x' * 30}-9499") in stored["data"]
        assert rcm.read_workload(cm, ns, ns, wl, HOT).version == "v2"
        # managedFields were stripped along (they list every key again)
        assert len(json.dumps(stored["metadata"].get("managedFields", []))) < 10_000
    finally:
        client.close()


def test_a_prune_conflict_after_a_write_is_not_the_writes_failure(kube_env, admin, caplog):
    from kidecar_supervisor.storage.result_configmap import ResultConfigMap
    ns, cm = kube_env.namespace, uid("res")
    entry = codec.pod_entry(ResultRecord(plugin=HOT, version="v" + "x" * 900, timestamp=1))
    data = {codec.pod_key(HOT, ns, f"p{i:04d}"): entry for i in range(1000)}
    admin.call("POST", f"/api/v1/namespaces/{ns}/configmaps",
               {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": cm, "namespace": ns}, "data": data})
    client = KubeClient.from_environment(kubeconfig=kube_env.admin_kubeconfig)
    rcm = ResultConfigMap(client, Coalescer())
    try:
        stale = admin.configmap(cm, ns)
        assert codec.data_size(stale["data"]) > codec.PRUNE_ABOVE
        admin.call("PATCH", f"/api/v1/namespaces/{ns}/configmaps/{cm}",
                   {"data": {"other": "pod"}}, content_type="application/merge-patch+json")
        with caplog.at_level(logging.INFO, logger="kidecar.storage.configmap"):
            rcm._prune_after_write(rcm.path(cm, ns), stale, frozenset())
        assert "the next writer prunes" in caplog.text
        assert len(admin.configmap(cm, ns)["data"]) == 1001  # nothing pruned, nothing lost
    finally:
        client.close()
        admin.delete_configmap(cm, ns)


# -- markers -----------------------------------------------------------------------

def test_markers_create_replace_and_remove_labels_and_annotations(kube_env, admin, tmp_path):
    ns, name = kube_env.namespace, uid("mk")
    admin.pod(name, ns, labels={"existing": "old", "gone": "x"},
              annotations={"a.io/existing": "old", "a.io/gone": "x"})
    s = store(_cfg(uid("res"), ns), name, ns, tmp_path, kube_env.admin_kubeconfig)
    try:
        update = MarkerUpdate(
            labels={"existing": "new", "created": "v1.2 beta", "gone": None, "never": None},
            annotations={"a.io/existing": "new", "a.io/created": "hello world",
                         "a.io/gone": None, "a.io/never": None})
        assert s.apply_markers(update) == WRITTEN
        meta = admin.get_pod(name, ns)["metadata"]
        assert meta["labels"] == {"existing": "new", "created": "v1.2_beta"}
        assert meta["annotations"] == {"a.io/existing": "new", "a.io/created": "hello world"}
        # removing keys that are already gone is not an error
        assert s.apply_markers(MarkerUpdate(labels={"gone": None},
                                            annotations={"a.io/gone": None})) == WRITTEN
    finally:
        s.close()


def test_opsstate_via_target_and_json_path_with_templates(kube_env, admin, tmp_path):
    ns, name, gs = kube_env.namespace, uid("pod"), uid("gs")
    admin.pod(name, ns, env={"GS_NAME": gs})
    admin.gameserver(gs, ns, {"opsState": "None"})
    target = TargetRef(group="game.kruise.io", version="v1alpha1", resource="gameservers",
                       name="${POD:GS_NAME}", namespace="${SELF:POD_NAMESPACE}")
    s = store(_cfg(uid("res"), ns, target=target, json_path="/spec/opsState"), name, ns,
              tmp_path, kube_env.admin_kubeconfig)
    s2 = store(_cfg(uid("res"), ns, target=target,
                    json_path="/metadata/annotations/game.io~1state"),
               name, ns, tmp_path, kube_env.admin_kubeconfig)
    try:
        assert s.apply_markers(MarkerUpdate(target_value="Maintaining")) == WRITTEN
        assert admin.get_gameserver(gs, ns)["spec"]["opsState"] == "Maintaining"
        assert s.apply_markers(MarkerUpdate(target_value="WaitToBeDeleted")) == WRITTEN
        assert admin.get_gameserver(gs, ns)["spec"]["opsState"] == "WaitToBeDeleted"
        # an escaped key under a map that does not exist yet
        assert s2.apply_markers(MarkerUpdate(target_value="busy")) == WRITTEN
        obj = admin.get_gameserver(gs, ns)
        assert obj["metadata"]["annotations"] == {"game.io/state": "busy"}
        assert obj["spec"]["opsState"] == "WaitToBeDeleted"
        # target_value None leaves the target alone
        s.apply_markers(MarkerUpdate(labels={"x": "y"}))
        assert admin.get_gameserver(gs, ns)["spec"]["opsState"] == "WaitToBeDeleted"
    finally:
        s.close()
        s2.close()


def test_opsstate_of_the_pods_own_gameserver_by_default(kube_env, admin, tmp_path):
    ns, name = kube_env.namespace, uid("gs")
    admin.pod(name, ns, labels={"game.kruise.io/owner-gss": "g"}, owner=("GameServer", name))
    admin.gameserver(name, ns)
    s = store(_cfg(uid("res"), ns), name, ns, tmp_path, kube_env.admin_kubeconfig)
    try:
        assert s.apply_markers(MarkerUpdate(target_value="WaitToBeDeleted",
                                            labels={"gameserver-idle": "true"})) == WRITTEN
        assert admin.get_gameserver(name, ns)["spec"]["opsState"] == "WaitToBeDeleted"
        assert admin.get_pod(name, ns)["metadata"]["labels"]["gameserver-idle"] == "true"
    finally:
        s.close()


def test_json_path_through_a_list_uses_a_json_patch(kube_env, admin, tmp_path):
    ns, name = kube_env.namespace, uid("gs")
    admin.pod(name, ns)
    admin.gameserver(name, ns, {"containers": [{"name": "game", "image": "game:1"}]})
    s = store(_cfg(uid("res"), ns, json_path="/spec/containers/0/image"), name, ns, tmp_path,
              kube_env.admin_kubeconfig)
    try:
        assert s.apply_markers(MarkerUpdate(target_value="game:2")) == WRITTEN
        spec = admin.get_gameserver(name, ns)["spec"]
        assert spec["containers"] == [{"name": "game", "image": "game:2"}]
    finally:
        s.close()


def test_a_concurrent_change_to_a_json_patched_target_is_retried(kube_env, admin, tmp_path):
    """The guard's failed ``test`` (422, no "test" in the message) means: read again, retry."""
    ns, name = "kidecar-guard", uid("gs")  # no "test" anywhere in the object's path
    admin.ensure_namespace(ns)
    admin.pod(name, ns)
    admin.gameserver(name, ns, {"containers": [{"name": "game", "image": "game:1"}]})
    s = store(_cfg(uid("res"), ns, json_path="/spec/containers/0/image"), name, ns, tmp_path,
              kube_env.admin_kubeconfig)
    try:
        writer = s._backend.targets
        target = writer.resolve(s.cfg)
        stale = admin.get_gameserver(name, ns)
        admin.call("PATCH", f"/apis/game.kruise.io/v1alpha1/namespaces/{ns}/gameservers/{name}",
                   {"metadata": {"labels": {"changed": "meanwhile"}}},
                   content_type="application/merge-patch+json")
        writer._write_json_patch(target, "game:3", stale)
        got = admin.get_gameserver(name, ns)
        assert got["spec"]["containers"] == [{"name": "game", "image": "game:3"}]
        assert got["metadata"]["labels"] == {"changed": "meanwhile"}
    finally:
        s.close()


@pytest.mark.parametrize("group, resource, expected", [
    ("game.kruise.io", "gameserverz", "'gameserverz' does not exist in game.kruise.io/v1alpha1"
                                      "; the API server serves: gameservers, gameserversets"),
    ("games.example.com", "gameservers", "does not serve games.example.com/v1alpha1"),
])
def test_unknown_target_resource_is_a_clear_error(kube_env, admin, tmp_path, group, resource,
                                                  expected):
    ns, name = kube_env.namespace, uid("pod")
    admin.pod(name, ns)
    target = TargetRef(group=group, version="v1alpha1", resource=resource, name=name,
                       namespace=ns)
    s = store(_cfg(uid("res"), ns, target=target), name, ns, tmp_path, kube_env.admin_kubeconfig)
    try:
        with pytest.raises(TargetError) as info:
            s.apply_markers(MarkerUpdate(target_value="x"))
        assert expected in str(info.value)
        assert len(s.journal) == 0, "a permanent error is not journaled forever"
        assert list((tmp_path / "kube-journal" / "failed").iterdir()), "kept, not lost"
    finally:
        s.close()


def test_bursts_of_marker_writes_coalesce(kube_env, admin, tmp_path):
    ns, name = kube_env.namespace, uid("burst")
    admin.pod(name, ns)
    s = store(_cfg(uid("res"), ns), name, ns, tmp_path, kube_env.admin_kubeconfig)
    try:
        s.latest_for_pod(HOT)  # pod read once
        before = s.client.requests
        threads = [threading.Thread(target=s.apply_markers,
                                    args=(MarkerUpdate(labels={f"l{i}": str(i),
                                                               "last": str(i)}),))
                   for i in range(60)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sent = s.client.requests - before
        labels = admin.get_pod(name, ns)["metadata"]["labels"]
        assert all(labels[f"l{i}"] == str(i) for i in range(60))
        assert sent < 30, f"{sent} requests for 60 concurrent writes: not coalesced"
    finally:
        s.close()


# -- outages and the journal -------------------------------------------------------

@pytest.mark.slow
def test_api_outage_journals_then_flushes_everything(kube_env, admin, tmp_path):
    ns, cm, name = kube_env.namespace, uid("res"), uid("out")
    admin.pod(name, ns, labels={"game.kruise.io/owner-gss": "outage"})
    s = store(_cfg(cm, ns), name, ns, tmp_path, kube_env.admin_kubeconfig)
    try:
        assert s.record_result(ResultRecord(plugin=HOT, version="v1", url="u1")) == WRITTEN
        with kube_env.apiserver_outage():
            t0 = time.monotonic()
            assert s.record_result(ResultRecord(plugin=HOT, version="v2", url="u2")) == JOURNALED
            assert time.monotonic() - t0 < 10, "an outage must not block the caller for long"
            assert s.apply_markers(MarkerUpdate(labels={"state": "a"})) == JOURNALED
            assert s.apply_markers(MarkerUpdate(labels={"state": "b"},
                                                annotations={"n": "1"})) == JOURNALED
            assert s.record_result(ResultRecord(plugin=HOT, version="v3", url="u3",
                                                success=False, message="x")) == JOURNALED
            s.emit_event("ProbeFailed", "game did not answer", warning=True)
            assert len(s.journal) >= 3
            # the API is down: the latest successful result is still known locally
            assert s.latest_for_pod(HOT).version == "v2"
        assert s.flush(60), "journal not flushed after the API came back"
        pod = admin.get_pod(name, ns)
        ann = _annotation(pod)
        assert (ann["version"], ann["success"], ann["lastGood"]["version"]) == ("v3", False, "v2")
        assert pod["metadata"]["labels"]["state"] == "b"
        assert pod["metadata"]["annotations"]["n"] == "1"
        assert s.latest_for_workload(HOT).version == "v2"
        reasons = [e["reason"] for e in admin.events_for(name, ns)]
        assert reasons == ["HotUpdateSucceeded", "HotUpdateSucceeded", "HotUpdateFailed",
                           "ProbeFailed"]
        assert not list((tmp_path / "kube-journal").glob("*.json"))
    finally:
        s.close()


_CHILD = textwrap.dedent("""
    import sys, os
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from kidecar_supervisor.plugin_api import PodIdentity
    from kidecar_supervisor.storage.base import ResultRecord, StorageConfig, MarkerUpdate
    from kidecar_supervisor.storage.inkube import InKubeStore
    cfg = StorageConfig(type="InKube", result_configmap={cm!r}, result_namespace={ns!r})
    s = InKubeStore(cfg, PodIdentity({name!r}, {ns!r}), Path({state!r}), kubeconfig={kc!r})
    print(s.record_result(ResultRecord(plugin="hot_update", version="v5", url="u5")), flush=True)
    print(s.apply_markers(MarkerUpdate(labels={{"restarted": "yes"}})), flush=True)
    sys.stdin.read()  # wait to be killed
""")


@pytest.mark.slow
def test_journal_survives_a_sidecar_killed_during_the_outage(kube_env, admin, tmp_path):
    """First use while the API is down, then SIGKILL: a new store writes it all at start."""
    ns, cm, name = kube_env.namespace, uid("res"), uid("kill")
    admin.pod(name, ns, labels={"game.kruise.io/owner-gss": "phoenix"})
    state = tmp_path / "state"
    script = _CHILD.format(repo=str(REPO), cm=cm, ns=ns, name=name, state=str(state),
                           kc=kube_env.admin_kubeconfig)
    with kube_env.apiserver_outage():
        proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == JOURNALED
        assert proc.stdout.readline().strip() == JOURNALED
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert len(list((state / "kube-journal").glob("*.json"))) == 2
    s = store(_cfg(cm, ns), name, ns, state, kube_env.admin_kubeconfig)  # the restart
    try:
        assert s.flush(60)
        pod = admin.get_pod(name, ns)
        assert _annotation(pod)["version"] == "v5"
        assert pod["metadata"]["labels"]["restarted"] == "yes"
        wl = _results(admin, cm, ns)[
            codec.workload_key(HOT, ns, Workload("GameServerSet", "phoenix"))]
        assert json.loads(wl)["version"] == "v5"
    finally:
        s.close()


_CHILD_DIRECT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from kidecar_supervisor.plugin_api import PodIdentity
    from kidecar_supervisor.storage.base import ResultRecord, StorageConfig
    from kidecar_supervisor.storage.inkube import InKubeStore
    cfg = StorageConfig(type="InKube", result_configmap={cm!r}, result_namespace={ns!r})
    s = InKubeStore(cfg, PodIdentity({name!r}, {ns!r}), Path({state!r}), kubeconfig={kc!r})
    print(s.record_result(ResultRecord(plugin="hot_update", version="v6", url="u6")), flush=True)
""")

_HANGING_KUBECONFIG = textwrap.dedent("""
    apiVersion: v1
    kind: Config
    clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
    users: [{{name: u, user: {{token: t}}}}]
    contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
    current-context: x
""")


@pytest.mark.slow
def test_a_sidecar_killed_during_a_direct_write_loses_nothing(kube_env, admin, tmp_path):
    """The API accepts the connection but never answers; SIGKILL mid-attempt; restart."""
    import socket
    ns, cm, name = kube_env.namespace, uid("res"), uid("mid")
    admin.pod(name, ns, labels={"game.kruise.io/owner-gss": "midway"})
    state = tmp_path / "state"
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(8)
    kubeconfig = tmp_path / "hanging.kubeconfig"
    kubeconfig.write_text(_HANGING_KUBECONFIG.format(port=hang.getsockname()[1]))
    script = _CHILD_DIRECT.format(repo=str(REPO), cm=cm, ns=ns, name=name, state=str(state),
                                  kc=str(kubeconfig))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        hang.settimeout(30)
        conn, _ = hang.accept()  # the direct attempt is under way, and blocked
        time.sleep(0.3)
        assert proc.poll() is None, "the write must still be in flight"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        conn.close()
    finally:
        hang.close()
        if proc.poll() is None:
            proc.kill()
    assert len(list((state / "kube-journal").glob("*.json"))) == 1
    s = store(_cfg(cm, ns), name, ns, state, kube_env.admin_kubeconfig)  # the restart
    try:
        assert s.flush(60)
        assert _annotation(admin.get_pod(name, ns))["version"] == "v6"
        wl = _results(admin, cm, ns)[
            codec.workload_key(HOT, ns, Workload("GameServerSet", "midway"))]
        assert json.loads(wl)["version"] == "v6"
    finally:
        s.close()


def test_a_direct_write_leaves_no_journal_entry_behind(kube_env, admin, tmp_path):
    ns, cm, name = kube_env.namespace, uid("res"), uid("clean")
    admin.pod(name, ns)
    s = store(_cfg(cm, ns), name, ns, tmp_path, kube_env.admin_kubeconfig)
    try:
        assert s.record_result(ResultRecord(plugin=HOT, version="v1", url="u1")) == WRITTEN
        assert s.apply_markers(MarkerUpdate(labels={"a": "b"})) == WRITTEN
        assert len(s.journal) == 0
        assert not list((tmp_path / "kube-journal").glob("*.json"))
    finally:
        s.close()


def test_the_replayer_survives_a_disk_error(kube_env, admin, tmp_path):
    """A journal file that cannot be read (here: a directory in its place) is retried."""
    from kidecar_supervisor.storage.journal import Journal
    ns, cm, name = kube_env.namespace, uid("res"), uid("disk")
    admin.pod(name, ns)
    journal_dir = tmp_path / "kube-journal"
    entry_id = Journal(journal_dir).append(
        {"op": "event", "reason": "DiskTest", "message": "replayed after a disk error",
         "warning": False, "time": time.time(), "parts": ["event"]})
    entry_file = journal_dir / f"{entry_id:016d}.json"
    aside = tmp_path / "aside.json"
    entry_file.rename(aside)
    entry_file.mkdir()  # reading it raises IsADirectoryError, an OSError
    s = store(_cfg(cm, ns), name, ns, tmp_path, kube_env.admin_kubeconfig)
    try:
        assert not s.flush(1.5)
        entry_file.rmdir()  # the disk is fine again
        aside.rename(entry_file)
        assert s.flush(30), "the replayer died on the disk error"
        assert [e["reason"] for e in admin.events_for(name, ns)] == ["DiskTest"]
    finally:
        s.close()


def test_an_event_create_repeated_after_a_lost_answer_is_not_an_error(kube_env, admin):
    """The same create sent twice (the first answer lost) gets 409 AlreadyExists: success."""
    from kidecar_supervisor.storage.kube_events import EventRecorder
    ns, name = kube_env.namespace, uid("ev")
    pod = admin.pod(name, ns)
    client = KubeClient.from_environment(kubeconfig=kube_env.admin_kubeconfig)
    involved = {"apiVersion": "v1", "kind": "Pod", "name": name, "namespace": ns,
                "uid": pod["metadata"]["uid"]}
    recorder = EventRecorder(client, ns, lambda: involved)
    try:
        body = recorder._body("Retried", "sent twice", False, time.time())
        recorder.create(body)
        recorder.create(body)  # what the client's retry sends
        assert [e["reason"] for e in admin.events_for(name, ns)] == ["Retried"]
    finally:
        client.close()


def test_a_refused_part_is_kept_when_a_later_part_waits(kube_env, admin, tmp_path, caplog):
    """Pod part: 422 (invalid label key), for good; ConfigMap part: 403, retriable."""
    ns, name = kube_env.namespace, uid("mixed")
    doomed = uid("kidecar-doomed")  # a terminating namespace refuses new objects with 403
    admin.ensure_namespace(doomed)
    admin.call("DELETE", f"/api/v1/namespaces/{doomed}")
    admin.pod(name, ns)
    s = store(_cfg("sidecar-result", doomed, label_key="bad key!"), name, ns, tmp_path,
              kube_env.admin_kubeconfig)
    try:
        with caplog.at_level(logging.ERROR, logger="kidecar.storage.journal"):
            outcome = s.record_result(ResultRecord(plugin=HOT, version="v1", url="u"))
        # the answer names each part: the pod refused for good, the rest on its way
        assert recorded_parts(outcome, "InKube") == {"pod": False, "store": True, "event": True}
        parts = json.loads(outcome.split(" ", 1)[1])
        assert (parts["store"], parts["event"]) == (JOURNALED, WRITTEN)
        assert parts["pod"].startswith("refused: ") and "422" in parts["pod"], parts
        kept = [json.loads(p.read_text())
                for p in (tmp_path / "kube-journal" / "failed").glob("*.json")]
        assert [k["entry"]["parts"] for k in kept] == [["pod"]]
        assert "422" in kept[0]["reason"] and kept[0]["entry"]["record"]["version"] == "v1"
        assert any("never be written" in r.getMessage() for r in caplog.records)
        pending = s.journal.entries()
        assert [e["parts"] for _, e in pending] == [["configmap"]]  # the Event went on
    finally:
        s.close()


def test_a_stuck_configmap_write_does_not_hold_up_the_pod(kube_env, admin, tmp_path):
    """The ConfigMap answers 403 (terminating namespace): markers still reach the pod,
    live and when replayed at start; the ConfigMap's own writes keep their order."""
    from kidecar_supervisor.storage.inkube import _cfg_to_dict
    from kidecar_supervisor.storage.journal import Journal
    ns, name = kube_env.namespace, uid("stuck")
    doomed = uid("kidecar-doomed")
    admin.ensure_namespace(doomed)
    admin.call("DELETE", f"/api/v1/namespaces/{doomed}")
    admin.pod(name, ns)
    cfg = _cfg("sidecar-result", doomed)
    s = store(cfg, name, ns, tmp_path, kube_env.admin_kubeconfig)
    try:
        assert s.record_result(ResultRecord(plugin=HOT, version="v1", url="u")) == JOURNALED
        assert s.apply_markers(MarkerUpdate(labels={"live": "yes"})) == WRITTEN
        assert admin.get_pod(name, ns)["metadata"]["labels"]["live"] == "yes"
        # another write of the stuck ConfigMap queues behind the first one
        assert s.record_result(ResultRecord(plugin=HOT, version="v2", url="u")) == JOURNALED
        assert [e["record"]["version"] for _, e in s.journal.entries()] == ["v1", "v2"]
    finally:
        s.close()
    # at the next start a journaled pod write behind the stuck entries is replayed
    Journal(tmp_path / "kube-journal").append(
        {"op": "markers", "cfg": _cfg_to_dict(cfg), "labels": {"replayed": "yes"},
         "annotations": {}, "target_value": None, "parts": ["pod", "target"]})
    s = store(cfg, name, ns, tmp_path, kube_env.admin_kubeconfig)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if admin.get_pod(name, ns)["metadata"]["labels"].get("replayed") == "yes":
                break
            time.sleep(0.2)
        assert admin.get_pod(name, ns)["metadata"]["labels"].get("replayed") == "yes"
        assert [e["record"]["version"] for _, e in s.journal.entries()
                if e["op"] == "result"] == ["v1", "v2"]
    finally:
        s.close()


# -- the client and the coalescer, against a local HTTP server ---------------------

class _Scripted(BaseHTTPRequestHandler):
    """Answers from a script: a list of (status, headers, body) per request."""

    script: list[tuple[int, dict[str, str], dict[str, Any]]] = []
    seen: list[tuple[str, str, float]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        type(self).seen.append((self.command, self.path, time.monotonic()))
        status, headers, body = type(self).script.pop(0) if type(self).script else (
            200, {}, {"kind": "Pod"})
        raw = json.dumps(body).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_PATCH = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    _Scripted.script, _Scripted.seen = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    connection = Connection.plain(f"http://127.0.0.1:{server.server_address[1]}")
    yield KubeClient(connection, retry=RetryPolicy(attempts=4, base=0.05, cap=0.2, deadline=10))
    server.shutdown()


POD_PATH = ResourcePath("", "v1", "pods", "ns", "p")


def test_429_is_retried_after_retry_after(scripted):
    status = {"kind": "Status", "reason": "TooManyRequests", "message": "slow down"}
    _Scripted.script = [(429, {"Retry-After": "1"}, status), (503, {}, status)]
    t0 = time.monotonic()
    assert scripted.merge_patch(POD_PATH, {"metadata": {}}) == {"kind": "Pod"}
    seen = _Scripted.seen
    assert len(seen) == 3 and seen[0][:2] == ("PATCH", "/api/v1/namespaces/ns/pods/p")
    assert seen[1][2] - seen[0][2] >= 0.95, "Retry-After: 1 was not honoured"
    assert time.monotonic() - t0 < 5


def test_retries_are_bounded(scripted):
    status = {"kind": "Status", "reason": "InternalError", "message": "etcd down"}
    _Scripted.script = [(500, {}, status)] * 10
    with pytest.raises(KubeUnavailable, match="patch pods \"p\" in namespace \"ns\": 500"):
        scripted.merge_patch(POD_PATH, {})
    assert len(_Scripted.seen) == 4


def test_a_long_retry_after_is_not_waited_for(scripted):
    _Scripted.script = [(429, {"Retry-After": "120"}, {"message": "later"})]
    t0 = time.monotonic()
    with pytest.raises(KubeUnavailable) as info:
        scripted.get(POD_PATH)
    assert info.value.retry_after == 120 and time.monotonic() - t0 < 2


def test_403_logs_the_missing_verb_and_resource(scripted, caplog):
    msg = ('configmaps "sidecar-result" is forbidden: User "system:serviceaccount:g:kidecar" '
           'cannot patch resource "configmaps" in API group "" in the namespace "kube-system"')
    _Scripted.script = [(403, {}, {"kind": "Status", "reason": "Forbidden", "message": msg})]
    with caplog.at_level(logging.ERROR, logger="kidecar.storage.kube"):
        with pytest.raises(KubeForbidden):
            scripted.merge_patch(ResourcePath("", "v1", "configmaps", "kube-system",
                                              "sidecar-result"), {})
    lines = [r.getMessage() for r in caplog.records]
    assert any("may not patch configmaps in namespace \"kube-system\"" in line
               and "grant verb 'patch' on resource 'configmaps'" in line for line in lines), lines
    assert len(_Scripted.seen) == 1, "a 403 is not retried"


def test_unreachable_api_is_unavailable():
    client = KubeClient(Connection.plain("http://127.0.0.1:9"),  # discard: refused
                        retry=RetryPolicy(attempts=2, base=0.01, cap=0.02))
    with pytest.raises(KubeUnavailable, match="unreachable"):
        client.get(POD_PATH)
    assert client.requests == 2


def test_coalescer_sends_one_request_per_burst_and_latest_value_wins():
    sent: list[dict[str, Any]] = []
    gate = threading.Event()

    def send(patch: dict[str, Any]) -> str:
        if not sent:
            gate.wait(5)  # hold the first request in flight while the burst arrives
        sent.append(patch)
        return "ok"

    c = Coalescer()
    first = threading.Thread(target=c.submit, args=("pod", {"l": {"a": "0"}}, send))
    first.start()
    time.sleep(0.1)
    results: list[str] = []
    burst = [threading.Thread(target=lambda i=i: results.append(
        c.submit("pod", {"l": {"a": str(i), f"k{i}": "x"}}, send))) for i in range(1, 21)]
    for t in burst:
        t.start()
    time.sleep(0.2)
    gate.set()
    first.join()
    for t in burst:
        t.join()
    assert len(sent) == 2 and results == ["ok"] * 20
    assert sent[1]["l"]["a"] in {str(i) for i in range(1, 21)}
    assert all(sent[1]["l"][f"k{i}"] == "x" for i in range(1, 21))


def test_coalescer_hands_errors_to_every_caller():
    def send(patch: dict[str, Any]) -> None:
        raise KubeUnavailable("down")

    with pytest.raises(KubeUnavailable):
        Coalescer().submit("x", {"a": 1}, send)


# -- a bounded journal (issue 12 §2) and its hand-over (§3) -------------------------

_FORBIDDEN_NS = "kidecar-forbidden"


def _sidecar_rbac(kube_env: Any) -> None:
    """config/rbac.yaml for the test namespace; nothing at all in _FORBIDDEN_NS."""
    text = (REPO / "config" / "rbac.yaml").read_text()
    text = text.replace("${POD_NAMESPACE}", kube_env.namespace)
    kube_env.apply_yaml(text.replace("${RESULT_NAMESPACE}", "kube-system"))


def test_a_configmap_403_for_an_hour_leaves_a_bounded_journal(kube_env, admin, tmp_path,
                                                              caplog):
    """A result every simulated minute for an hour, the ConfigMaps refused (403) all along:
    at most one failed/ record per write, at most ~10 minutes of writes pending, one
    error line for the cause; the pod annotation and Events are written throughout."""
    from kidecar_supervisor.storage import inkube

    _sidecar_rbac(kube_env)
    admin.ensure_namespace(_FORBIDDEN_NS)
    ns, name = kube_env.namespace, uid("hour")
    admin.pod(name, ns)
    s = store(_cfg("sidecar-result", _FORBIDDEN_NS), name, ns, tmp_path,
              kube_env.sidecar_kubeconfig)
    now = [time.time()]
    s._backend.clock = s.journal.clock = lambda: now[0]
    s._backend._ensure_replayer = lambda: None  # the test makes the replayer's passes
    pending: list[int] = []
    try:
        with caplog.at_level(logging.DEBUG, logger="kidecar.storage"):
            for minute in range(60):
                now[0] += 60
                outcome = s.record_result(ResultRecord(plugin=HOT, version=f"v{minute}",
                                                       url=f"u{minute}", timestamp=now[0]))
                assert recorded_parts(outcome, "InKube")["pod"], outcome
                s._backend._replay_step()  # the replayer's pass of that minute
                pending.append(len(s.journal))
        assert max(pending) <= inkube.FORBIDDEN_GIVE_UP / 60 + 2, pending
        assert pending[-1] >= 5, "a fixed RBAC would still get the recent ones through"
        failed = [json.loads(p.read_text()) for p in (tmp_path / "kube-journal" / "failed")
                  .glob("*.json")]
        versions = [f["entry"]["record"]["version"] for f in failed]
        assert len(versions) == len(set(versions)), "at most one failed/ record per write"
        assert set(versions) | {e["record"]["version"] for _, e in s.journal.entries()} == \
            {f"v{m}" for m in range(60)}, "every write is either failed/ or still pending"
        assert all(f["entry"]["parts"] == ["configmap"] for f in failed)
        assert s.stats()["failed"] == len(failed) >= 45
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len([e for e in errors if "dropped from the queue" in e]) == 1, errors
        for verb in ("patch", "get"):  # once per missing permission, not per write
            assert len([e for e in errors if f"RBAC: the sidecar may not {verb} " in e]) <= 1
        assert any("RBAC: the sidecar may not patch configmaps" in e for e in errors)
        assert _annotation(admin.get_pod(name, ns))["version"] == "v59"
    finally:
        s.close()


@pytest.mark.slow
def test_journal_caps_drop_events_before_results(kube_env, admin, tmp_path):
    """During an outage past the caps, Events go first; every result is still written."""
    ns, cm, name = kube_env.namespace, uid("res"), uid("caps")
    admin.pod(name, ns, labels={"game.kruise.io/owner-gss": "caps"})
    cfg = _cfg(cm, ns, journal_max_entries=20)
    s = store(cfg, name, ns, tmp_path, kube_env.admin_kubeconfig)
    try:
        s.latest_for_pod(HOT)  # the pod is read while the API is there
        with kube_env.apiserver_outage():
            for i in range(8):
                assert s.record_result(ResultRecord(plugin=HOT, version=f"v{i}",
                                                    url=f"u{i}")) == JOURNALED
            for i in range(30):
                s.emit_event("ProbeFailed", f"no answer {i}", warning=True)
            kinds = [e["op"] for _, e in s.journal.entries()]
            assert len(kinds) == 20 and kinds.count("result") == 8
            assert s.stats()["dropped"]["event"] == 18 and s.stats()["dropped"]["result"] == 0
        assert s.flush(60)
        assert _annotation(admin.get_pod(name, ns))["version"] == "v7"
        assert json.loads(_results(admin, cm, ns)[codec.pod_key(HOT, ns, name)])[0] == "v7"
        messages = [e["message"] for e in admin.events_for(name, ns)
                    if e["reason"] == "ProbeFailed"]
        assert messages == [f"no answer {i}" for i in range(18, 30)]  # the newest kept
    finally:
        s.close()


_OLDER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from kidecar_supervisor.plugin_api import PodIdentity
    from kidecar_supervisor.storage.base import ResultRecord, StorageConfig
    from kidecar_supervisor.storage.inkube import InKubeStore
    cfg = StorageConfig(type="InKube", result_configmap={cm!r}, result_namespace={ns!r})
    s = InKubeStore(cfg, PodIdentity({name!r}, {ns!r}), Path({state!r}), kubeconfig={kc!r})
    for version in ("v5", "v6"):
        print(s.record_result(ResultRecord(plugin="hot_update", version=version,
                                           url="http://f/" + version)), flush=True)
    sys.stdin.read()  # stays, holding the journal, until killed
""")

_UNREACHABLE_KUBECONFIG = textwrap.dedent("""
    apiVersion: v1
    kind: Config
    clusters: [{name: c, cluster: {server: "http://127.0.0.1:9"}}]
    users: [{name: u, user: {token: t}}]
    contexts: [{name: x, context: {cluster: c, user: u}}]
    current-context: x
""")


@pytest.mark.slow
def test_the_newer_instance_of_a_hot_upgrade_writes_what_the_older_one_journaled(
        kube_env, admin, tmp_path):
    """Both SidecarSet containers share the state dir. The older one journals two results
    (it cannot reach the API) and is SIGKILLed; the newer one, already running on the
    same dir, takes the journal over and writes them; neither replays the other's."""
    ns, cm, name = kube_env.namespace, uid("res"), uid("upg")
    admin.pod(name, ns, labels={"game.kruise.io/owner-gss": "upgrade"})
    state = tmp_path / "state"
    unreachable = tmp_path / "unreachable.kubeconfig"
    unreachable.write_text(_UNREACHABLE_KUBECONFIG)
    script = _OLDER.format(repo=str(REPO), cm=cm, ns=ns, name=name, state=str(state),
                           kc=str(unreachable))
    older = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    newer = None
    try:
        assert older.stdout is not None
        assert older.stdout.readline().strip() == JOURNALED
        assert older.stdout.readline().strip() == JOURNALED
        newer = store(_cfg(cm, ns), name, ns, state, kube_env.admin_kubeconfig)
        assert not newer.journal.owner and len(newer.journal) == 0
        time.sleep(1.0)
        # nothing of the older one's is written while it owns the journal
        assert codec.DEFAULT_ANNOTATION_KEY not in (
            admin.get_pod(name, ns)["metadata"].get("annotations") or {})
        os.kill(older.pid, signal.SIGKILL)  # right after it journaled
        older.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (newer.journal.owner
                                                   and len(newer.journal) == 0):
            time.sleep(0.1)
        assert newer.journal.owner and newer.flush(30)
        assert _annotation(admin.get_pod(name, ns))["version"] == "v6"
        wl = _results(admin, cm, ns)[codec.workload_key(HOT, ns, Workload("GameServerSet",
                                                                          "upgrade"))]
        assert json.loads(wl)["version"] == "v6"
        reasons = [e["reason"] for e in admin.events_for(name, ns)]
        assert reasons.count("HotUpdateSucceeded") == 2, reasons  # each written once
        assert not list((state / "kube-journal").glob("standby-*"))
    finally:
        if older.poll() is None:
            older.kill()
        if newer is not None:
            newer.close()
