"""Pure parts of the InKube store: pointers/patches, templating, labels, entries, workloads."""

from __future__ import annotations

import json
import re

import pytest

from kidecar_supervisor.storage import result_codec as codec
from kidecar_supervisor.storage.base import ResultRecord
from kidecar_supervisor.storage.patches import (
    PointerError,
    apply_merge_patch,
    compose,
    escape_token,
    format_pointer,
    json_patch_ops,
    parse_pointer,
    pointer_merge_patch,
    walks_into_list,
)
from kidecar_supervisor.storage.templating import TemplateError, first_container_env, render
from kidecar_supervisor.storage.workload import Workload, workload_of

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


# -- RFC 6901 ----------------------------------------------------------------------

def test_pointer_escaping_round_trips() -> None:
    assert escape_token("a/b~c") == "a~1b~0c"
    assert format_pointer(["metadata", "labels", "game.io/state~x"]) == \
        "/metadata/labels/game.io~1state~0x"
    assert parse_pointer("/metadata/labels/game.io~1state~0x") == \
        ["metadata", "labels", "game.io/state~x"]
    # ~01 is "~1" literally, not "/" (unescape ~1 before ~0 would be wrong)
    assert parse_pointer("/a~01") == ["a~1"]
    assert parse_pointer("") == []
    with pytest.raises(PointerError, match="start with '/'"):
        parse_pointer("spec/opsState")
    with pytest.raises(PointerError, match="bad escape"):
        parse_pointer("/a~2")


def test_merge_patch_from_pointer_creates_replaces_and_removes() -> None:
    patch = pointer_merge_patch("/metadata/annotations/a~1b", "v")
    assert patch == {"metadata": {"annotations": {"a/b": "v"}}}
    obj = {"metadata": {"name": "x"}}
    obj = apply_merge_patch(obj, patch)  # missing parents are created
    assert obj == {"metadata": {"name": "x", "annotations": {"a/b": "v"}}}
    obj = apply_merge_patch(obj, pointer_merge_patch("/metadata/annotations/a~1b", "w"))
    assert obj["metadata"]["annotations"] == {"a/b": "w"}
    obj = apply_merge_patch(obj, pointer_merge_patch("/metadata/annotations/a~1b", None))
    assert obj["metadata"]["annotations"] == {}
    # removing again: no error, nothing changes
    assert apply_merge_patch(obj, pointer_merge_patch("/metadata/annotations/a~1b", None)) == obj


def test_compose_is_latest_value_wins() -> None:
    a = {"metadata": {"labels": {"x": "1", "y": "1"}, "annotations": {"k": "a"}}}
    b = {"metadata": {"labels": {"x": None, "z": "2"}}}
    c = {"metadata": {"labels": {"y": "3"}}}
    combined = compose(compose(a, b), c)
    target = {"metadata": {"labels": {"x": "0", "w": "0"}}}
    step = apply_merge_patch(apply_merge_patch(apply_merge_patch(target, a), b), c)
    assert apply_merge_patch(target, combined) == step
    assert a == {"metadata": {"labels": {"x": "1", "y": "1"}, "annotations": {"k": "a"}}}


def test_json_patch_ops_work_whether_the_key_exists_or_not() -> None:
    obj = {"spec": {"containers": [{"name": "a", "env": []}]}}
    assert walks_into_list(obj, "/spec/containers/0/image")
    assert not walks_into_list(obj, "/spec/opsState")
    assert json_patch_ops(obj, "/spec/containers/0/image", "x") == [
        {"op": "add", "path": "/spec/containers/0/image", "value": "x"}]
    assert json_patch_ops(obj, "/spec/containers/0/name", "b") == [
        {"op": "add", "path": "/spec/containers/0/name", "value": "b"}]
    # missing parents are added as nested maps, in one op, siblings untouched
    assert json_patch_ops(obj, "/spec/containers/0/labels/a~1b", "v") == [
        {"op": "add", "path": "/spec/containers/0/labels", "value": {"a/b": "v"}}]
    assert json_patch_ops(obj, "/spec/containers/0/name", None) == [
        {"op": "remove", "path": "/spec/containers/0/name"}]
    assert json_patch_ops(obj, "/spec/containers/0/nope", None) == []
    assert json_patch_ops(obj, "/spec/containers/5/name", None) == []
    assert json_patch_ops(obj, "/spec/containers/0/env/-", {"name": "A"}) == [
        {"op": "add", "path": "/spec/containers/0/env/-", "value": {"name": "A"}}]
    with pytest.raises(PointerError, match="not a list index"):
        json_patch_ops(obj, "/spec/containers/x/name", "v")
    with pytest.raises(PointerError, match="past the end"):
        json_patch_ops(obj, "/spec/containers/3/name", "v")


# -- templating --------------------------------------------------------------------

POD = {
    "metadata": {"name": "gs-1", "namespace": "game", "labels": {"app": "battle"}},
    "spec": {"nodeName": "node-a", "containers": [
        {"name": "game", "env": [
            {"name": "GSS", "value": "battle"},
            {"name": "FULL", "value": "$(GSS)-$(MISSING)-$$(GSS)"},
            {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ]},
        {"name": "sidecar", "env": [{"name": "OTHER", "value": "no"}]},
    ]},
}


def test_pod_env_is_the_first_containers_with_field_refs() -> None:
    env = first_container_env(POD)
    assert env == {"GSS": "battle", "FULL": "battle-$(MISSING)-$(GSS)", "ME": "gs-1",
                   "APP": "battle"}


def test_render_self_and_pod_references() -> None:
    calls = []

    def pod_env() -> dict[str, str]:
        calls.append(1)
        return first_container_env(POD)

    out = render("${SELF:POD_NAME}.${POD:GSS}.${POD:ME}", {"POD_NAME": "gs-1"}, pod_env)
    assert out == "gs-1.battle.gs-1"
    assert len(calls) == 1, "the pod env is computed once per render"
    assert render("plain", {}, None) == "plain"
    assert calls == [1], "no ${POD:..}: the pod is not needed"


@pytest.mark.parametrize("template, problem", [
    ("${SELF:NOPE}", "sidecar has no env var NOPE"),
    ("${POD:SECRET}", "first container has no env var SECRET"),
    ("${POD:OTHER}", "first container has no env var OTHER"),
    ("${ENV:X}", "unknown scope 'ENV'"),
    ("${POD_NAME}", "malformed reference"),
    ("${SELF:X", "malformed reference"),
])
def test_render_errors_name_the_variable(template: str, problem: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(problem)):
        render(template, {"X": "1"}, lambda: first_container_env(POD))


# -- labels and entries ------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("v1.2", "v1.2"),
    ("v1.2+build/7", "v1.2_build_7"),
    ("-v1-", "v1"),
    ("", ""),
    ("...", ""),
])
def test_label_values_are_sanitized(raw: str, expected: str) -> None:
    assert codec.sanitize_label_value(raw) == expected


def test_long_label_values_stay_valid_and_distinct() -> None:
    a = codec.sanitize_label_value("v" + "1." * 60 + "1")
    b = codec.sanitize_label_value("v" + "1." * 60 + "2")
    assert a != b
    for value in (a, b, codec.sanitize_label_value("é" * 100)):
        assert len(value) <= 63 and LABEL_VALUE.match(value), value


def test_result_labels_say_version_and_success() -> None:
    rec = ResultRecord(plugin="hot_update", version="v2.1", success=False)
    assert codec.result_labels("example.com/hot-version", rec) == {
        "example.com/hot-version": "v2.1", "example.com/hot-version-success": "false"}
    assert codec.result_labels("", rec) == {}
    long_key = "x" * 63
    assert len(codec.success_label_key(long_key)) == 63


def test_annotation_keeps_last_good_across_failures() -> None:
    ok = ResultRecord(plugin="hot_update", version="v2", url="http://h/v2.zip", timestamp=100.0)
    first = codec.annotation_value(ok, None)
    data = json.loads(first)
    assert data["version"] == "v2" and data["success"] is True and data["time"].endswith("Z")
    bad = ResultRecord(plugin="hot_update", version="v3", success=False, message="boom",
                       timestamp=200.0)
    second = codec.annotation_value(bad, first)
    assert json.loads(second)["lastGood"]["version"] == "v2"
    third = codec.annotation_value(
        ResultRecord(plugin="hot_update", version="v4", success=False, timestamp=300.0), second)
    latest = codec.last_good_from_annotation(third, "hot_update")
    assert latest is not None and (latest.version, latest.url) == ("v2", "http://h/v2.zip")
    assert codec.last_good_from_annotation(third, "other_plugin") is None
    assert codec.last_good_from_annotation("not json", "hot_update") is None


def test_configmap_keys_are_valid_and_unambiguous() -> None:
    key_re = re.compile(r"^[-._a-zA-Z0-9]+$")
    pk = codec.pod_key("hot_update", "game", "gs.1")
    wk = codec.workload_key("hot_update", "game", Workload("GameServerSet", "gs.x"))
    assert pk == "hot-update_game_gs.1" and pk.count("_") == 2
    assert wk == "hot-update_game_GameServerSet_gs.x" and wk.count("_") == 3
    long = codec.pod_key("hot_update", "n" * 63, "p" * 253)
    assert len(long) <= 253 and key_re.match(long) and long.count("_") == 2


def test_ten_thousand_pod_entries_fit_in_a_configmap() -> None:
    data = {}
    for i in range(10_000):
        rec = ResultRecord(plugin="hot_update", version="v10.20.30", success=True,
                           timestamp=1_795_000_000 + i)
        data[codec.pod_key("hot_update", "game-production", f"battle-server-{i}")] = \
            codec.pod_entry(rec)
    size = codec.data_size(data)
    assert size < codec.PRUNE_ABOVE < codec.CONFIGMAP_LIMIT, size
    assert codec.prune_keys(data) == []


def test_prune_drops_the_oldest_pod_entries_only() -> None:
    data = {codec.pod_key("p", "ns", f"pod-{i}"): codec.pod_entry(
        ResultRecord(plugin="p", version="v1", timestamp=1000 + i)) for i in range(100)}
    wk = codec.workload_key("p", "ns", Workload("StatefulSet", "old"))
    data[wk] = codec.workload_entry(ResultRecord(plugin="p", version="v1", timestamp=1))
    data["foreign"] = "x" * 10
    size = codec.data_size(data)
    dropped = codec.prune_keys(data, above=size - 1, to=size // 2)
    assert dropped[0] == codec.pod_key("p", "ns", "pod-0")
    assert wk not in dropped and "foreign" not in dropped
    kept = {k: v for k, v in data.items() if k not in dropped}
    assert codec.data_size(kept) <= size // 2
    assert codec.prune_keys(data, above=size) == []


def test_workload_entry_round_trip() -> None:
    rec = ResultRecord(plugin="hot_update", version="v7", url="http://x/v7", sha256="ab",
                       timestamp=5.5, pod="gs-3")
    back = codec.parse_workload_entry(codec.workload_entry(rec), "hot_update", "GameServerSet/gs")
    assert back is not None
    assert (back.version, back.url, back.sha256, back.timestamp, back.pod, back.success) == \
        ("v7", "http://x/v7", "ab", 5.5, "gs-3", True)
    assert codec.parse_workload_entry(None, "hot_update", "w") is None


# -- workloads ---------------------------------------------------------------------

def _pod(labels=None, owners=None, name="p-1"):
    return {"metadata": {"name": name, "labels": labels or {}, "ownerReferences": owners or []}}


def test_workload_rules() -> None:
    gss = _pod({"game.kruise.io/owner-gss": "battle"},
               [{"kind": "GameServer", "name": "x", "controller": True}])
    assert workload_of(gss) == Workload("GameServerSet", "battle")
    sts = _pod(owners=[{"kind": "Node", "name": "n"},
                       {"kind": "StatefulSet", "name": "db", "controller": True}])
    assert workload_of(sts) == Workload("StatefulSet", "db")
    rs = _pod({"pod-template-hash": "5d9f8"},
              [{"kind": "ReplicaSet", "name": "web-5d9f8", "controller": True}])
    assert workload_of(rs) == Workload("Deployment", "web")
    bare_rs = _pod(owners=[{"kind": "ReplicaSet", "name": "web-5d9f8", "controller": True}])
    assert workload_of(bare_rs) == Workload("ReplicaSet", "web-5d9f8")
    assert workload_of(_pod(name="lonely")) == Workload("Pod", "lonely")
    assert str(Workload.parse("GameServerSet/battle")) == "GameServerSet/battle"
