"""Results sharded over fixed-name ConfigMaps, at fleet scale, on the real API server."""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from kidecar_supervisor.storage import result_codec as codec
from kidecar_supervisor.storage import result_shards as rs
from kidecar_supervisor.storage.base import ResultRecord
from kidecar_supervisor.storage.coalesce import Coalescer
from kidecar_supervisor.storage.kube_api import KubeClient, KubeUnavailable
from kidecar_supervisor.storage.workload import Workload
from tests.support.inkube_support import Admin, uid

HOT = "hot_update"


@pytest.mark.slow
def test_ten_thousand_pods_results_are_all_readable_and_shards_stay_small(kube_env):
    """10,000 pods of 20 GameServerSets, 5 versions each, written concurrently in random
    order through the real shard code: every pod entry and workload record is correct."""
    admin = Admin(kube_env)
    ns, base = kube_env.namespace, uid("fleet")
    client = KubeClient.from_environment(kubeconfig=kube_env.admin_kubeconfig)
    shards = rs.ShardedResults(client, Coalescer())
    now = time.time() - 600
    records: list[tuple[Workload, ResultRecord]] = []
    for i in range(10_000):
        wl = Workload("GameServerSet", f"gss-{i % 20}")
        k = (i // 20) % 5  # each workload's pods reach one of 5 versions; v4 is the newest
        records.append((wl, ResultRecord(
            plugin=HOT, version=f"{wl.name}-v{k}", url=f"http://files/{wl.name}/v{k}.tgz",
            sha256=f"{k:064x}", timestamp=now + k, pod=f"{wl.name}-{i // 20}",
            workload=str(wl))))
    order = list(records)
    random.Random(12).shuffle(order)

    def write(item: tuple[Workload, ResultRecord]) -> None:
        wl, record = item
        shards.write(base, ns, ns, wl, record, None)

    try:
        started = time.monotonic()
        for start in range(0, len(order), 1000):  # in batches, 16 writers at a time
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(write, order[start:start + 1000]))
        took = time.monotonic() - started

        items = admin.call("GET", f"/api/v1/namespaces/{ns}/configmaps")["items"]
        mine = [c for c in items if c["metadata"]["name"].startswith(base + "-")]
        assert len(mine) <= rs.SHARD_COUNT
        data: dict[str, str] = {}
        for shard in mine:
            shard_data = shard.get("data") or {}
            # O(1) per write: a shard holds ~10 pods' entries, not the fleet's
            assert codec.data_size(shard_data) < 8 * 1024, shard["metadata"]["name"]
            assert not shard["metadata"].get("managedFields"), "stripped on every write"
            for key, value in shard_data.items():
                if not key.endswith(rs.SEEN_SUFFIX):
                    assert key not in data
                    data[key] = value
        for _, record in records:
            value = json.loads(data[codec.pod_key(HOT, ns, record.pod)])
            assert value[:3] == [record.version, True, int(record.timestamp)], record.pod
        for g in range(20):
            wl = Workload("GameServerSet", f"gss-{g}")
            text = shards.workload_record(base, ns, ns, wl, HOT)  # the read recovery makes
            assert text == data[codec.workload_key(HOT, ns, wl)]
            newest = codec.parse_workload_entry(text, HOT, str(wl))
            assert newest is not None and newest.version == f"gss-{g}-v4", text
            for k in range(5):  # a recreated pod of any version finds its URL
                assert rs.url_of(text, f"gss-{g}-v{k}") == (
                    f"http://files/gss-{g}/v{k}.tgz", f"{k:064x}")
        for _, record in random.Random(3).sample(records, 200):
            got = rs.good_from_pod_value(shards.pod_value(base, ns, ns, record.pod, HOT))
            assert got == (record.version, float(int(record.timestamp)))
        print(f"10,000 results in {took:.1f}s")
    finally:
        client.close()


def test_concurrent_versions_of_one_workload_never_move_its_record_back(kube_env):
    """Pods of one workload report v1..v40 at once (random order): the record ends on v40."""
    ns, base = kube_env.namespace, uid("race")
    client = KubeClient.from_environment(kubeconfig=kube_env.admin_kubeconfig)
    shards = rs.ShardedResults(client, Coalescer())
    wl = Workload("GameServerSet", "race")
    now = time.time()
    records = [ResultRecord(plugin=HOT, version=f"v{i}", url=f"u{i}", timestamp=now + i,
                            pod=f"race-{i}", workload=str(wl)) for i in range(1, 41)]
    random.Random(5).shuffle(records)
    def write(record: ResultRecord) -> None:
        # 40 distinct versions racing for one key may run out of compare-and-swap
        # tries: then the store journals the write and replays it, as done here
        for _ in range(20):
            try:
                shards.write(base, ns, ns, wl, record, None)
                return
            except KubeUnavailable:
                time.sleep(random.uniform(0.05, 0.3))
        raise AssertionError(f"{record.version} never written")

    try:
        with ThreadPoolExecutor(20) as pool:
            list(pool.map(write, records))
        newest = codec.parse_workload_entry(shards.workload_record(base, ns, ns, wl, HOT),
                                            HOT, str(wl))
        assert newest is not None and newest.version == "v40"
        late = ResultRecord(plugin=HOT, version="v0", url="u0", timestamp=now - 100,
                            pod="race-0", workload=str(wl))
        shards.write(base, ns, ns, wl, late, None)  # a replayed old result
        again = codec.parse_workload_entry(shards.workload_record(base, ns, ns, wl, HOT),
                                           HOT, str(wl))
        assert again is not None and again.version == "v40"
    finally:
        client.close()

