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
            # O(1) per write: a shard holds a block or a few (16 pods each), not the fleet
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
        for wl, record in random.Random(3).sample(records, 200):
            got = rs.good_from_pod_value(shards.pod_value(base, ns, ns, record.pod, HOT, wl))
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



def test_a_small_workloads_results_and_record_share_one_shard_no_workload_read(kube_env):
    """Issue 12: pods named <GameServerSet>-<ordinal> of one block share their workload
    record's shard, so a rollout costs one patch per pod plus one swap per version (the
    first write of the shard creates it with the record: no swap), never a read."""
    admin = Admin(kube_env)
    ns, base = kube_env.namespace, uid("small")
    client = KubeClient.from_environment(kubeconfig=kube_env.admin_kubeconfig)
    wl = Workload("GameServerSet", "small")
    pods = [f"small-{i}" for i in range(10)]
    sidecars = {pod: rs.ShardedResults(client, Coalescer()) for pod in pods}  # one each
    now = time.time() - 60

    def rollout(version: str, at: float) -> int:
        before = client.requests
        for pod in pods:
            sidecars[pod].write(base, ns, ns, wl, ResultRecord(
                plugin=HOT, version=version, url=f"http://files/{version}.tgz", timestamp=at,
                pod=pod, workload=str(wl)), None)
        return client.requests - before

    try:
        # a new shard: the first pod's patch finds nothing (404) and it creates the shard
        # with the record (no swap); every other pod: one merge patch, whose answer shows
        # the record naming v1 already
        assert rollout("v1", now) == 10 + 1
        # the next version: one merge patch per pod + one swap by the first pod
        assert rollout("v2", now + 1) == 10 + 1
        items = admin.call("GET", f"/api/v1/namespaces/{ns}/configmaps")["items"]
        mine = [c for c in items if c["metadata"]["name"].startswith(base + "-")]
        assert len(mine) == 1, [c["metadata"]["name"] for c in mine]
        data = mine[0]["data"]
        wk = codec.workload_key(HOT, ns, wl)
        assert set(data) == {codec.pod_key(HOT, ns, p) for p in pods} | {wk}, "no .seen copy"
        newest = codec.parse_workload_entry(data[wk], HOT, str(wl))
        assert newest is not None and (newest.version, newest.url) == ("v2",
                                                                       "http://files/v2.tgz")
        assert rs.url_of(data[wk], "v1") == ("http://files/v1.tgz", "")
        # a recreated small-3 (a new sidecar, nothing cached) reads the same shard
        fresh = rs.ShardedResults(client, Coalescer())
        got = rs.good_from_pod_value(fresh.pod_value(base, ns, ns, "small-3", HOT, wl))
        assert got == ("v2", float(int(now + 1)))
        assert fresh.workload_record(base, ns, ns, wl, HOT) == data[wk]
    finally:
        client.close()


def test_a_workload_past_one_block_keeps_every_result_and_one_record(kube_env):
    """40 pods = 3 ordinal blocks: blocks 1 and 2 learn the record through their
    shard's .seen copy; every entry is in its block's shard and readable."""
    admin = Admin(kube_env)
    ns, base = kube_env.namespace, uid("wide")
    client = KubeClient.from_environment(kubeconfig=kube_env.admin_kubeconfig)
    wl = Workload("GameServerSet", "wide")
    now = time.time() - 60
    sent = []
    try:
        for k, version in enumerate(("v1", "v2")):
            before = client.requests
            for i in range(40):  # each pod its own sidecar
                rs.ShardedResults(client, Coalescer()).write(base, ns, ns, wl, ResultRecord(
                    plugin=HOT, version=version, url=f"u-{version}", timestamp=now + k,
                    pod=f"wide-{i}", workload=str(wl)), None)
            sent.append(client.requests - before)
        # v1: a patch per pod + a create per block (after its 404); blocks 1 and 2: their
        # first pod reads the record and adds the .seen copy, the others read nothing
        assert sent[0] == 40 + 3 + 2 * 2, sent
        # v2: a patch per pod; block 0's first pod swaps the record (its answer was the
        # compared value); blocks 1 and 2: one read + one .seen swap each
        assert sent[1] == 40 + 1 + 2 * 2, sent
        reader = rs.ShardedResults(client, Coalescer())
        for i in range(40):
            path = reader.pod_shard(base, ns, ns, f"wide-{i}", wl)
            assert path.name == rs.shard_name(base, rs.shard_index(
                f"{ns}/GameServerSet/wide#{i // rs.ORDINAL_BLOCK}"))
            got = rs.good_from_pod_value(reader.pod_value(base, ns, ns, f"wide-{i}", HOT, wl))
            assert got == ("v2", float(int(now + 1))), i
        newest = codec.parse_workload_entry(reader.workload_record(base, ns, ns, wl, HOT),
                                            HOT, str(wl))
        assert newest is not None and newest.version == "v2"
        items = admin.call("GET", f"/api/v1/namespaces/{ns}/configmaps")["items"]
        mine = [c for c in items if c["metadata"]["name"].startswith(base + "-")]
        records = [c for c in mine if codec.workload_key(HOT, ns, wl) in (c.get("data") or {})]
        assert len(records) == 1, "one workload record"
        assert len(mine) <= 3
    finally:
        client.close()
