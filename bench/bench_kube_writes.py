"""InKube storage cost: API requests per hot-update result, coalescing, journal replay.

Runs a real kube-apiserver + etcd (tools/kube_env.py; binaries must be built
or are built first), applies config/rbac.yaml and writes as the sidecar's
ServiceAccount, like a pod would. Requests are counted from the API server's
audit log (one ResponseComplete event per request), so nothing the client
does is missed. Peer: the naive way — read-modify-write of the result
ConfigMap (GET + PUT), PATCH of the pod, POST of the Event — counted the same
way.

``rows(quick)``: quick = 20 results, full = 200, then ``fleet_rows``: etcd
growth per result (``etcd_mvcc_db_total_size_in_use_in_bytes`` and
``_in_bytes`` from etcd's /metrics) at 1,000 and 10,000 pods (quick: 1,000
and 2,000), the sharded layout beside the single ConfigMap measured in the
same run (issue 12). Run alone: ``bench/run --only kube_writes [--quick]``.
"""

from __future__ import annotations

import collections
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


class _Cluster:
    """A throw-away API server with the RBAC applied and one game pod + GameServer."""

    def __init__(self) -> None:
        from tools import kube_env as ke

        self.ke = ke
        self.dir = Path(tempfile.mkdtemp(prefix="bench-kube-"))
        self.env = ke.up(self.dir, tie_to_parent=True)
        self.ns = self.env["namespace"]
        rbac = (REPO / "config" / "rbac.yaml").read_text()
        rbac = rbac.replace("${POD_NAMESPACE}", self.ns)
        rbac = rbac.replace("${RESULT_NAMESPACE}", "kube-system")
        ke.apply_yaml(self.dir, rbac)
        self.admin = ke.session(self.dir, as_admin=True)

    def post(self, path: str, body: dict[str, Any]) -> None:
        r = self.admin.post(self.env["server"] + path, data=json.dumps(body),
                            headers={"Content-Type": "application/json"}, timeout=30)
        r.raise_for_status()

    def pod(self, name: str, gss: str = "bench") -> None:
        """A pod of GameServerSet ``gss`` (OKG names them ``<gss>-<ordinal>``) + its GameServer."""
        self.post(f"/api/v1/namespaces/{self.ns}/pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"game.kruise.io/owner-gss": gss}},
            "spec": {"containers": [{"name": "game", "image": "game:1"}]}})
        self.post(f"/apis/game.kruise.io/v1alpha1/namespaces/{self.ns}/gameservers", {
            "apiVersion": "game.kruise.io/v1alpha1", "kind": "GameServer",
            "metadata": {"name": name}, "spec": {}})

    def audit(self, user: str) -> list[dict[str, Any]]:
        return self.ke.audit_events(self.dir, user=user)

    def close(self) -> None:
        self.ke.down(self.dir)


def _store(cluster: _Cluster, pod: str, **cfg: Any) -> Any:
    from kidecar_supervisor.plugin_api import PodIdentity
    from kidecar_supervisor.storage.base import StorageConfig
    from kidecar_supervisor.storage.inkube import InKubeStore

    env = {"POD_NAME": pod, "POD_NAMESPACE": cluster.ns}
    return InKubeStore(StorageConfig(type="InKube", **cfg), PodIdentity(pod, cluster.ns),
                       Path(tempfile.mkdtemp(prefix="bench-state-")),
                       kubeconfig=cluster.env["sidecar_kubeconfig"], self_env=lambda: env)


def _counted(cluster: _Cluster, user: str, fn: Any) -> tuple[list[dict[str, Any]], Any]:
    """Run ``fn``; the audit events of ``user`` it caused (the log is written blocking)."""
    before = len(cluster.audit(user))
    out = fn()
    return cluster.audit(user)[before:], out


def _resource(event: dict[str, Any]) -> str:
    """The resource a request was about (discovery requests have no objectRef)."""
    ref = event.get("objectRef")
    return str(ref.get("resource", "?")) if ref else f"discovery {event['requestURI']}"


def _breakdown(events: list[dict[str, Any]], per: int) -> str:
    c = collections.Counter(f"{e['verb']} {_resource(e)}"
                            for e in events)
    return ", ".join(f"{k} {v / per:.2f}" for k, v in sorted(c.items()))


def _results(cluster: _Cluster, n: int) -> list[dict[str, str]]:
    from kidecar_supervisor.storage.base import WRITTEN, ResultRecord

    user = cluster.env["sidecar_user"]
    cluster.pod("bench-0")
    store = _store(cluster, "bench-0", label_key="hot-version")
    store.latest_for_pod("hot_update")  # start-up read of the pod (once per sidecar)
    latencies: list[float] = []

    def write_all() -> list[str]:
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            out.append(store.record_result(ResultRecord(
                plugin="hot_update", version=f"v1.{i}", url=f"http://files/v1.{i}.tgz",
                success=i % 5 != 4)))
            latencies.append(time.perf_counter() - t0)
        return out

    events, statuses = _counted(cluster, user, write_all)
    store.close()
    assert set(statuses) == {WRITTEN}, statuses
    per = len(events) / n
    state = len([e for e in events if _resource(e) != "events"]) / n
    naive = _naive(cluster, min(n, 50))
    p50 = statistics.median(latencies) * 1000
    p95 = sorted(latencies)[int(0.95 * (len(latencies) - 1))] * 1000
    return [
        {"benchmark": "InKube: API requests per hot-update result (audit log)",
         "kidecar": f"{per:.2f} ({state:.2f} state writes + Event)",
         "peers": f"naive RMW: {naive:.2f}",
         "aim": "≤ 2",
         "notes": f"{n} results of one pod, each a NEW version (worst case) as the sidecar "
                  f"SA; {_breakdown(events, n)}; the Event (required per result) is the 3rd "
                  "request; bench-0 is ordinal 0 of GameServerSet bench, so its shard holds "
                  "the workload record too: a success of a new version adds the record's "
                  "compare-and-swap (its pod-entry patch answer is the compared value)"},
        {"benchmark": "InKube: result write latency (pod + ConfigMap + Event)",
         "kidecar": f"p50 {p50:.1f} ms, p95 {p95:.1f} ms",
         "peers": "-", "aim": "< 100 ms p95", "notes": "loopback API server, etcd on disk"},
    ]


def _naive(cluster: _Cluster, n: int) -> float:
    """GET + PUT ConfigMap, PATCH pod, POST Event per result, as admin (RBAC has no PUT)."""
    s, base, ns = cluster.admin, cluster.env["server"], cluster.ns
    cm_url = f"{base}/api/v1/namespaces/{ns}/configmaps/naive-result"
    s.post(f"{base}/api/v1/namespaces/{ns}/configmaps", json={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "naive-result"},
        "data": {}}, timeout=30).raise_for_status()

    def write_all() -> None:
        for i in range(n):
            cm = s.get(cm_url, timeout=30).json()
            cm.setdefault("data", {})["bench-0"] = f"v1.{i}"
            s.put(cm_url, json=cm, timeout=30).raise_for_status()
            s.patch(f"{base}/api/v1/namespaces/{ns}/pods/bench-0",
                    data=json.dumps({"metadata": {"annotations": {"r": f"v1.{i}"}}}),
                    headers={"Content-Type": "application/merge-patch+json"},
                    timeout=30).raise_for_status()
            s.post(f"{base}/api/v1/namespaces/{ns}/events", json={
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"bench-0.{time.time_ns():x}"},
                "involvedObject": {"kind": "Pod", "name": "bench-0", "namespace": ns},
                "reason": "HotUpdateSucceeded", "message": "x", "type": "Normal"},
                timeout=30).raise_for_status()

    events, _ = _counted(cluster, cluster.env["admin_user"], write_all)
    return len(events) / n


def _burst(cluster: _Cluster, writers: int) -> dict[str, str]:
    from kidecar_supervisor.storage.base import MarkerUpdate

    user = cluster.env["sidecar_user"]
    cluster.pod("burst-0")
    store = _store(cluster, "burst-0")
    store.latest_for_pod("hot_update")

    def burst() -> None:
        threads = [threading.Thread(target=store.apply_markers, args=(MarkerUpdate(
            labels={"state": f"s{i}"}, annotations={f"a{i % 5}": str(i)},
            target_value=f"s{i}"),)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    events, _ = _counted(cluster, user, burst)
    store.close()
    by_res = collections.Counter(_resource(e) for e in events)
    others = {k: v for k, v in by_res.items() if k not in ("pods", "gameservers")}
    return {"benchmark": f"InKube: {writers} concurrent marker writes (pod + GameServer)",
            "kidecar": f"{by_res['pods']} pod + {by_res['gameservers']} GameServer requests",
            "peers": f"one request per write: {writers} + {writers}",
            "aim": "≪ 1 request per write",
            "notes": f"coalesced, latest value wins; other requests: {others or 'none'}"}


def _outage(cluster: _Cluster, n: int) -> dict[str, str]:
    from kidecar_supervisor.storage.base import JOURNALED, ResultRecord

    cluster.pod("outage-0")
    store = _store(cluster, "outage-0")
    store.latest_for_pod("hot_update")
    cluster.ke.stop_apiserver(cluster.dir)
    try:
        t0 = time.perf_counter()
        statuses = [store.record_result(ResultRecord(plugin="hot_update", version=f"v{i}"))
                    for i in range(n)]
        journal_ms = (time.perf_counter() - t0) / n * 1000
    finally:
        cluster.ke.start_apiserver(cluster.dir)
    t1 = time.perf_counter()
    flushed = store.flush(120)
    replay_s = time.perf_counter() - t1
    store.close()
    assert set(statuses) == {JOURNALED} and flushed
    return {"benchmark": f"InKube: {n} results during an API outage",
            "kidecar": f"{journal_ms:.1f} ms/result to journal; journal empty "
                       f"{replay_s:.1f} s after the API server was ready again",
            "peers": "-", "aim": "nothing lost",
            "notes": "first result waits out the bounded retries (~1 s), the rest queue "
                     "behind it at fsync speed"}


def _rollout(cluster: _Cluster, pods: int) -> dict[str, str]:
    """A fleet rollout: every pod of one workload reports the same new version."""
    from kidecar_supervisor.storage.base import ResultRecord

    user = cluster.env["sidecar_user"]
    names = [f"fleet-{i}" for i in range(pods)]  # GameServerSet fleet's pods, as OKG names them
    stores = []
    for name in names:
        cluster.pod(name, gss="fleet")
        store = _store(cluster, name)
        store.latest_for_pod("hot_update")  # each sidecar's start-up read, not counted
        stores.append(store)

    def write_all() -> None:
        for store in stores:
            store.record_result(ResultRecord(plugin="hot_update", version="v9",
                                             url="http://files/v9.tgz"))

    events, _ = _counted(cluster, user, write_all)
    for store in stores:
        store.close()
    per = len(events) / pods
    return {"benchmark": f"InKube: API requests per result, {pods}-pod rollout of one version",
            "kidecar": f"{per:.2f}", "peers": "naive RMW: 4.00", "aim": "≤ 2",
            "notes": f"{_breakdown(events, pods)}; pods fleet-0..{pods - 1} of GameServerSet "
                     "fleet share a shard per block of 16 ordinals; block 0's holds the "
                     "workload record, so only the first pod swaps it (no read); the first pod "
                     "of each other block reads the record and swaps its shard's .seen copy; "
                     "a new shard costs a 404 and a create (with the record) once"}


def rows(quick: bool) -> list[dict[str, str]]:
    cluster = _Cluster()
    try:
        out = _results(cluster, 20 if quick else 200)
        out.append(_rollout(cluster, 10 if quick else 50))
        out.append(_burst(cluster, 50))
        out.append(_outage(cluster, 10 if quick else 50))
    finally:
        cluster.close()
    return out + fleet_rows(quick)


# -- etcd bytes per result at fleet scale ----------------------------------------------

#: results measured per layout and fleet size (after the fleet's other results)
_MEASURED = 300


def _etcd_sizes(cluster: _Cluster) -> tuple[int, int]:
    """(etcd_mvcc_db_total_size_in_bytes, ..._in_use_in_bytes) from etcd's /metrics."""
    import urllib.request

    url = f"http://127.0.0.1:{cluster.env['etcd_client_port']}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("etcd_mvcc_db_total_size_in_bytes",
                    "etcd_mvcc_db_total_size_in_use_in_bytes"):
            values[name] = int(float(value))
    return (values["etcd_mvcc_db_total_size_in_bytes"],
            values["etcd_mvcc_db_total_size_in_use_in_bytes"])


def _in_threads(fn: Any, items: list[Any], threads: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fn, items))


def _fleet_growth(cluster: _Cluster, fleet: int, layout: str) -> dict[str, float]:
    """etcd growth per result with ``fleet`` pods, one layout: a rollout of one version.

    ``shards`` (kidecar): every result of the rollout goes through the real code
    (8 writers); ``single`` (the layout before issue 12, one ConfigMap): the
    first ``fleet - _MEASURED`` results are created as that code leaves them
    (writing them one by one would take hours and, at 10,000 pods, etcd's 2 GiB
    quota), the last ``_MEASURED`` go through its real code. etcd is measured
    around the last ``_MEASURED`` results in both, and over the whole rollout
    for the shards.
    """
    from kidecar_supervisor.storage import result_codec as codec
    from kidecar_supervisor.storage import result_shards as rs
    from kidecar_supervisor.storage.base import ResultRecord
    from kidecar_supervisor.storage.coalesce import Coalescer
    from kidecar_supervisor.storage.kube_api import KubeClient
    from kidecar_supervisor.storage.result_configmap import ResultConfigMap
    from kidecar_supervisor.storage.workload import Workload

    ns, base = "kube-system", f"bench-{layout}-{fleet}"
    wl = Workload("GameServerSet", "battle-server")
    client = KubeClient.from_environment(kubeconfig=cluster.env["admin_kubeconfig"])
    new = [ResultRecord(plugin="hot_update", version="v10.20.31", url="http://files/v2.tgz",
                        pod=f"battle-server-{i}", workload=str(wl)) for i in range(fleet)]
    if layout == "single":
        data = {codec.pod_key("hot_update", cluster.ns, r.pod): codec.pod_entry(r)
                for r in new[:-_MEASURED]}
        data[codec.workload_key("hot_update", cluster.ns, wl)] = codec.workload_entry(new[0])
        cluster.post(f"/api/v1/namespaces/{ns}/configmaps",
                     {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": base},
                      "data": data})

    def write(record: Any) -> None:
        # each pod is its own sidecar: no coalescing of different pods' writes
        if layout == "shards":
            rs.ShardedResults(client, Coalescer()).write(base, ns, cluster.ns, wl, record, None)
        else:
            ResultConfigMap(client, Coalescer()).write(base, ns, cluster.ns, wl, record)

    rollout_before = _etcd_sizes(cluster)
    if layout == "shards":
        _in_threads(write, new[:-_MEASURED], 8)
    before, requests = _etcd_sizes(cluster), client.requests
    # the single ConfigMap one write at a time: 8 concurrent 1 MiB patches at 10,000
    # pods time the API server out (30 s), which is the problem itself
    _in_threads(write, new[-_MEASURED:], 8 if layout == "shards" else 1)
    after, requests = _etcd_sizes(cluster), client.requests - requests
    client.close()
    return {"total": (after[0] - before[0]) / _MEASURED,
            "in_use": (after[1] - before[1]) / _MEASURED,
            "rollout_in_use": (after[1] - rollout_before[1]) / fleet,
            "requests": requests / _MEASURED}


def fleet_rows(quick: bool) -> list[dict[str, str]]:
    """etcd bytes per result at two fleet sizes, sharded beside the single ConfigMap."""
    sizes = (1000, 2000) if quick else (1000, 10_000)
    cluster = _Cluster()
    try:
        got = {(fleet, layout): _fleet_growth(cluster, fleet, layout)
               for fleet in sizes for layout in ("shards", "single")}
    finally:
        cluster.close()
    small = got[(sizes[0], "shards")]["in_use"]
    out = []
    for fleet in sizes:
        mine, peer = got[(fleet, "shards")], got[(fleet, "single")]
        out.append({
            "benchmark": f"InKube: etcd growth per result, {fleet:,} pods (issue 12)",
            "kidecar": f"{mine['in_use'] / 1024:.2f} KiB ({mine['in_use'] / small:.2f}× the "
                       f"{sizes[0]:,}-pod figure); whole rollout "
                       f"{mine['rollout_in_use'] / 1024:.2f} KiB",
            "peers": f"one ConfigMap: {peer['in_use'] / 1024:.1f} KiB",
            "aim": f"≤ 2× the {sizes[0]:,}-pod figure, < 32 KiB",
            "notes": f"etcd_mvcc_db_total_size_in_use_in_bytes around the last {_MEASURED} "
                     f"results of a rollout (db_total_size_in_bytes: kidecar "
                     f"{mine['total'] / 1024:.2f} KiB, one ConfigMap "
                     f"{peer['total'] / 1024:.1f} KiB; it grows in bbolt steps); "
                     f"{rs_count()} shards; store-part requests per result: kidecar "
                     f"{mine['requests']:.2f}, one ConfigMap {peer['requests']:.2f} "
                     "(+ pod patch + Event)"})
    return out


def rs_count() -> int:
    from kidecar_supervisor.storage.result_shards import SHARD_COUNT

    return SHARD_COUNT
