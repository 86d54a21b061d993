"""Result shards and older records: names, hashing, compact values, Go and old layouts."""

from __future__ import annotations

from pathlib import Path

import yaml

from kidecar_supervisor.storage import result_codec as codec
from kidecar_supervisor.storage import result_shards as rs
from kidecar_supervisor.storage.base import DEFAULT_RESULT_CONFIGMAP, ResultRecord
from kidecar_supervisor.storage.legacy_records import (
    LegacyRecords,
    go_annotation_version,
    go_versions,
    version_key,
)
from kidecar_supervisor.storage.workload import Workload

REPO = Path(__file__).resolve().parents[2]
HOT = "hot_update"


def test_the_role_names_exactly_the_shards_the_code_writes() -> None:
    docs = list(yaml.safe_load_all((REPO / "config" / "rbac.yaml").read_text()))
    rules = [r for d in docs if d and d.get("kind") == "Role" for r in d.get("rules", [])]
    patched = [r for r in rules if "configmaps" in r["resources"] and "patch" in r["verbs"]]
    assert len(patched) == 1
    assert patched[0]["resourceNames"] == rs.all_shard_names(DEFAULT_RESULT_CONFIGMAP)
    assert len(set(patched[0]["resourceNames"])) == rs.SHARD_COUNT


def test_shard_index_is_stable_and_spreads_a_fleet_evenly() -> None:
    # sha256, not hash(): the same in every process and every Python
    assert rs.shard_index("game/battle-server-17") == rs.shard_index("game/battle-server-17")
    counts = [0] * rs.SHARD_COUNT
    for i in range(10_000):
        counts[rs.shard_index(f"game/battle-server-{i}")] += 1
    assert max(counts) <= 30, max(counts)  # ~10 expected: no hot shard
    assert rs.shard_name("sidecar-result", 7) == "sidecar-result-0007"


def test_pod_values_are_compact_and_keep_the_last_good_version() -> None:
    good = ResultRecord(plugin=HOT, version="v3", url="http://f/v3", timestamp=1795000000)
    bad = ResultRecord(plugin=HOT, version="v4", success=False, timestamp=1795000100)
    assert rs.pod_value(good, None) == '["v3",true,1795000000]'
    assert rs.good_from_pod_value(rs.pod_value(good, None)) == ("v3", 1795000000.0)
    assert rs.good_from_pod_value(rs.pod_value(bad, good)) == ("v3", 1795000000.0)
    assert rs.good_from_pod_value(rs.pod_value(bad, None)) is None
    assert rs.good_from_pod_value("not json") is None


def test_the_workload_record_remembers_the_urls_of_recent_versions() -> None:
    text = None
    for i in range(rs.KEEP_URLS + 3):
        text = rs.workload_value(ResultRecord(plugin=HOT, version=f"v{i}", url=f"u{i}",
                                              sha256=f"s{i}", timestamp=i + 1), text)
    newest = codec.parse_workload_entry(text, HOT, "GameServerSet/g")
    assert newest is not None and (newest.version, newest.url) == (
        f"v{rs.KEEP_URLS + 2}", f"u{rs.KEEP_URLS + 2}")
    assert rs.url_of(text, "v5") == ("u5", "s5")
    assert rs.url_of(text, "v0") is None, "only the last KEEP_URLS versions are kept"


def test_go_annotation_and_configmap_values_are_read() -> None:
    assert go_annotation_version("v2: Update success") == "v2"
    assert go_annotation_version("1.4.2-hotfix3: Update success") == "1.4.2-hotfix3"
    assert go_annotation_version('{"version": "v2"}') is None
    assert go_annotation_version("v2: Update failed") is None
    value = "hot_update:\n    v1: http://f/v1\n    \"1.10\": http://f/1.10\nprobe:\n    x: y\n"
    assert go_versions(value, HOT) == {"v1": "http://f/v1", "1.10": "http://f/1.10"}
    assert go_versions("{not: [yaml", HOT) == {}
    assert sorted(["v10", "v9", "v9.1", "v1"], key=version_key) == ["v1", "v9", "v9.1", "v10"]


def test_legacy_records_answer_for_the_pod_and_only_the_pods_workload() -> None:
    ns = "game"
    data = {
        # the Go kidecar: <namespace>-<pod>
        "game-gs-0": "hot_update:\n  v9: http://f/v9\n  v10: http://f/v10\n",
        "game-gs-1": "hot_update:\n  v11: http://f/v11\n",
        "game-gs-2-0": "hot_update:\n  v99: http://f/other-gss\n",  # GameServerSet gs-2
        "other-gs-3": "hot_update:\n  v98: http://f/other-namespace\n",
    }
    legacy = LegacyRecords(data, ns)
    mine = legacy.for_pod(HOT, "gs-0", Workload("GameServerSet", "gs"))
    assert mine is not None and (mine.version, mine.url) == ("v10", "http://f/v10")
    workload = legacy.for_workload(HOT, Workload("GameServerSet", "gs"))
    assert workload is not None and (workload.version, workload.url) == ("v11", "http://f/v11")
    other = legacy.for_workload(HOT, Workload("GameServerSet", "gs-2"))
    assert other is not None and other.version == "v99"
    assert legacy.for_workload(HOT, Workload("GameServerSet", "nothing")) is None
    # this project's old layout: the pod key has no URL, the workload entry has it
    old = {codec.pod_key(HOT, ns, "p"): '["v4",true,1795000000]',
           codec.workload_key(HOT, ns, Workload("GameServerSet", "g")): codec.workload_entry(
               ResultRecord(plugin=HOT, version="v4", url="http://f/v4", timestamp=1795000000))}
    found = LegacyRecords(old, ns).for_pod(HOT, "p", Workload("GameServerSet", "g"))
    assert found is not None and (found.version, found.url) == ("v4", "http://f/v4")


def test_a_workloads_ordinal_pods_share_a_shard_block_by_block() -> None:
    gss = Workload("GameServerSet", "battle")
    # a small workload's pods and its record: one shard (no workload read in a rollout)
    keys = {rs.placement_key("game", f"battle-{i}", gss) for i in range(rs.ORDINAL_BLOCK)}
    assert keys == {rs.workload_placement_key("game", gss)} == {"game/GameServerSet/battle#0"}
    assert rs.placement_key("game", f"battle-{rs.ORDINAL_BLOCK}", gss) == \
        "game/GameServerSet/battle#1"
    # a pod recreated with its name computes the same key, in any process
    assert rs.placement_key("game", "battle-37", gss) == rs.placement_key("game", "battle-37", gss)
    # the namespace and the kind keep equally named workloads apart
    assert rs.placement_key("other", "battle-3", gss) != rs.placement_key("game", "battle-3", gss)
    assert rs.placement_key("game", "battle-3", Workload("StatefulSet", "battle")) != \
        rs.placement_key("game", "battle-3", gss)
    # names that are not <workload>-<ordinal> keep the pod's own key
    for pod, wl in [("battle-7f9c4d-x2b9q", Workload("Deployment", "battle")),
                    ("battle-007", gss), ("battle-", gss), ("battle-١٢", gss),
                    ("battlefield-3", gss), ("solo", Workload("Pod", "solo"))]:
        assert rs.placement_key("game", pod, wl) == f"game/{pod}", pod
    # a bare pod's record shares its pod's shard
    assert rs.workload_placement_key("game", Workload("Pod", "solo")) == "game/solo"


def test_blocks_of_a_large_fleet_spread_evenly_over_the_shards() -> None:
    counts = [0] * rs.SHARD_COUNT
    for g in range(20):
        gss = Workload("GameServerSet", f"gss-{g}")
        for i in range(500):
            counts[rs.shard_index(rs.placement_key("game", f"gss-{g}-{i}", gss))] += 1
    # 10,000 pods in 640 blocks of 16: a shard holds one or a few blocks, never a fleet
    assert max(counts) <= 6 * rs.ORDINAL_BLOCK, max(counts)
    assert sum(1 for c in counts if c) >= 400
