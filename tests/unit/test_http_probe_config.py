"""http_probe config: the seed documents as published, and clear errors with field paths."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kidecar_supervisor.config_reader import ConfigError, ConfigReader
from kidecar_supervisor.storage.base import MarkerPolicy, TargetRef
from workers.http_probe.config import DEFAULT_METRIC, HttpProbeConfig
from workers.http_probe.plugin import HttpProbePlugin

FIXTURES = Path(__file__).resolve().parents[1] / "support" / "fixtures"


def seed_plugins(name: str) -> list[dict[str, Any]]:
    """The ``plugins`` list of a seed ConfigMap's config.yaml."""
    configmap = yaml.safe_load((FIXTURES / name).read_text())
    config = yaml.safe_load(configmap["data"]["config.yaml"])
    plugins: list[dict[str, Any]] = config["plugins"]
    return plugins


def parse(config: Any, index: int = 0) -> HttpProbeConfig:
    reader = ConfigReader(config, f"plugins[{index}].config", "config.yaml")
    return HttpProbeConfig.parse(reader)


def seed_probe_config(name: str) -> tuple[int, HttpProbeConfig]:
    plugins = seed_plugins(name)
    index = next(i for i, p in enumerate(plugins) if p["name"] == "http_probe")
    return index, parse(plugins[index]["config"], index)


def test_plugin_declares_its_config_type() -> None:
    assert HttpProbePlugin.name == "http_probe"
    assert HttpProbePlugin.config_type is HttpProbeConfig


@pytest.mark.parametrize("seed", ["seed-http-probe.yaml", "seed-okg-proposal-http-probe.yaml"])
def test_seed_probe_documents_parse_as_published(seed: str) -> None:
    _, cfg = seed_probe_config(seed)
    assert cfg.start_delay_seconds == 10
    assert cfg.probe_interval_seconds == 5
    (endpoint,) = cfg.endpoints
    assert endpoint.url == "http://localhost:8080"
    assert endpoint.method == "GET"
    assert endpoint.timeout == 30
    assert endpoint.expected_status_code == 200
    assert endpoint.json_path is None
    assert (endpoint.success_threshold, endpoint.failure_threshold) == (1, 3)
    storage = endpoint.storage
    assert storage.type == "InKube"
    assert storage.marker_policies == (
        MarkerPolicy("WaitToBeDeleted", game_server_ops_state="WaitToBeDeleted"),
        MarkerPolicy("Allocated", game_server_ops_state="Allocated"),
        MarkerPolicy("None", game_server_ops_state="None"),
    )


def test_seed_demo_without_probe_interval_gets_the_default() -> None:
    index, cfg = seed_probe_config("seed-okg-proposal-demo.yaml")
    assert index == 0
    assert cfg.start_delay_seconds == 60
    assert cfg.probe_interval_seconds == 5


def test_proposal_document_with_target_labels_and_annotation_key() -> None:
    index, cfg = seed_probe_config("seed-kruise-proposal-sidecar-fixed.yaml")
    assert index == 1
    storage = cfg.endpoints[0].storage
    assert storage.annotation_key == "http_probe"
    assert storage.target == TargetRef(
        "game.kruise.io", "v1alpha1", "gameservers", "${SELF:POD_NAME}", "${SELF:POD_NAMESPACE}"
    )
    assert storage.json_path == "/spec/opsState"
    assert [p.state for p in storage.marker_policies] == ["idle", "allocated", "unknown"]
    assert storage.marker_policies[0].labels == (("gameserver-idle", "true"),)
    assert storage.marker_policies[0].annotations == (
        ("controller.kubernetes.io/pod-deletion-cost", "-10"),
    )


def test_proposal_document_as_published_is_not_yaml() -> None:
    """The published proposal's inKube block is mis-indented: a YAML error with its line."""
    configmap = yaml.safe_load((FIXTURES / "seed-kruise-proposal-sidecar.yaml").read_text())
    with pytest.raises(yaml.YAMLError) as info:
        yaml.safe_load(configmap["data"]["config.yaml"])
    assert "line 29" in str(info.value) and "target:" in str(info.value)


def test_full_endpoint_config() -> None:
    cfg = parse({
        "probeIntervalSeconds": 0.5,
        "endpoints": [{
            "url": "https://127.0.0.1:9443/state?x=1",
            "method": "post",
            "headers": {"Authorization": "Bearer t", "X-Game": 1},
            "timeout": 0.25,
            "expectedStatusCode": 204,
            "jsonPathConfig": {"jsonPath": "$.room['players'][0]", "fieldType": "number"},
            "successThreshold": 2,
            "failureThreshold": 5,
            "storageConfig": {"type": "HTTPMetric", "httpMetric": {"metricName": "game_players"}},
        }],
    })
    (ep,) = cfg.endpoints
    assert ep.method == "POST"
    assert ep.headers == (("Authorization", "Bearer t"), ("X-Game", "1"))
    assert ep.timeout == 0.25 and ep.expected_status_code == 204
    assert ep.json_path is not None and ep.json_path.field_type == "number"
    assert ep.json_path.path.steps == ("room", "players", 0)
    assert (ep.success_threshold, ep.failure_threshold) == (2, 5)
    assert ep.storage.type == "HTTPMetric" and ep.metric_name == "game_players"
    assert cfg.start_delay_seconds == 0


def test_defaults() -> None:
    (ep,) = parse({"endpoints": [{"url": "http://127.0.0.1:1/"}]}).endpoints
    assert (ep.method, ep.timeout, ep.expected_status_code) == ("GET", 5.0, 200)
    assert ep.storage.type == "Local" and ep.metric_name == DEFAULT_METRIC


GOOD: dict[str, Any] = {
    "probeIntervalSeconds": 5,
    "endpoints": [{
        "url": "http://localhost:8080",
        "timeout": 30,
        "storageConfig": {
            "type": "InKube",
            "inKube": {"markerPolices": [
                {"state": "idle", "labels": {"gameserver-idle": "true"}},
                {"state": "WaitToBeDeleted", "gameServerOpsState": "WaitToBeDeleted"},
            ]},
        },
    }],
}
EP = "plugins[0].config.endpoints[0]"
POLICIES = f"{EP}.storageConfig.inKube.markerPolices"


def broken(path: str, value: Any) -> dict[str, Any]:
    """GOOD with the value at dotted ``path`` (``endpoints.0.x``) replaced; None deletes."""
    config = copy.deepcopy(GOOD)
    node: Any = config
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key: Any = int(last) if last.isdigit() else last
    if value is None:
        del node[key]
    else:
        node[key] = value
    return config


@pytest.mark.parametrize(
    ("path", "value", "field", "words"),
    [
        ("probeIntervalSeconds", 0, "plugins[0].config.probeIntervalSeconds", "greater than 0"),
        ("probeIntervalSeconds", -5, "plugins[0].config.probeIntervalSeconds", "greater than 0"),
        ("probeIntervalSeconds", "often", "plugins[0].config.probeIntervalSeconds", "number"),
        ("startDelaySeconds", -1, "plugins[0].config.startDelaySeconds", "at least 0"),
        ("endpoints", [], "plugins[0].config.endpoints", "at least one"),
        ("endpoints.0.timeout", 0, f"{EP}.timeout", "greater than 0"),
        ("endpoints.0.timeout", -3, f"{EP}.timeout", "greater than 0"),
        ("endpoints.0.url", None, f"{EP}.url", "required"),
        ("endpoints.0.url", "localhost:8080", f"{EP}.url", "http:// or https://"),
        ("endpoints.0.url", "ftp://x/", f"{EP}.url", "http:// or https://"),
        ("endpoints.0.url", "http://x:99999/", f"{EP}.url", "not a valid URL"),
        ("endpoints.0.method", "FETCH", f"{EP}.method", "must be one of"),
        ("endpoints.0.expectedStatusCode", 700, f"{EP}.expectedStatusCode", "at most 599"),
        ("endpoints.0.successThreshold", 0, f"{EP}.successThreshold", "at least 1"),
        ("endpoints.0.failureThreshold", 0, f"{EP}.failureThreshold", "at least 1"),
        ("endpoints.0.headers", {"Bad Header": "x"}, f"{EP}.headers", "header name"),
        ("endpoints.0.headers", {"X": "a\r\nInjected: 1"}, f"{EP}.headers", "line breaks"),
        ("endpoints.0.jsonPathConfig", {"jsonPath": "$.a[", "fieldType": "string"},
         f"{EP}.jsonPathConfig.jsonPath", "invalid JSONPath '$.a[' at position 4"),
        ("endpoints.0.jsonPathConfig", {"jsonPath": "room.*"},
         f"{EP}.jsonPathConfig.jsonPath", "gjson wildcards ('*') are not supported"),
        ("endpoints.0.jsonPathConfig", {"jsonPath": "$.a", "fieldType": "date"},
         f"{EP}.jsonPathConfig.fieldType", "must be one of"),
        ("endpoints.0.jsonPathConfig", {"jsonPath": "$.a", "fieldtpye": "string"},
         f"{EP}.jsonPathConfig.fieldtpye", "unknown field"),
        ("endpoints.0.storageConfig.type", "Redis", f"{EP}.storageConfig.type", "must be one of"),
        ("endpoints.0.storageConfig.inKube.jsonPath", "spec.opsState",
         f"{EP}.storageConfig.inKube.jsonPath", "JSON pointer"),
        ("endpoints.0.storageConfig.inKube.target",
         {"group": "game.kruise.io", "version": "v1alpha1", "resource": "gameservers",
          "name": "x"}, f"{EP}.storageConfig.inKube.jsonPath", "required with target"),
        ("endpoints.0.storageConfig.inKube.labelKey", "bad key!",
         f"{EP}.storageConfig.inKube.labelKey", "not a valid Kubernetes"),
        ("endpoints.0.storageConfig.inKube.markerPolices.1.state", "idle",
         f"{POLICIES}[1].state", "'idle' already has a policy"),
        ("endpoints.0.storageConfig.inKube.markerPolices.0.labels", {"gameserver-idle": "yes no"},
         f"{POLICIES}[0].labels.gameserver-idle", "not a valid label value"),
        ("endpoints.0.storageConfig.inKube.markerPolices.0.labels", {"-bad": "x"},
         f"{POLICIES}[0].labels.-bad", "not a valid Kubernetes label/annotation key"),
        ("endpoints.0.storageConfig.inKube.markerPolices.0.annotations", {"a/b/c": "x"},
         f"{POLICIES}[0].annotations.a/b/c", "not a valid Kubernetes label/annotation key"),
        ("endpoints.0.storageConfig.inKube.markerPolices.0.colour", "red",
         f"{POLICIES}[0].colour", "unknown field"),
        ("endpoints.0.storageConfig.httpMetric", {"metricName": "x"},
         f"{EP}.storageConfig.httpMetric", "only applies to type: HTTPMetric"),
        ("endpoints.0.storageConfig.type", "HTTPMetric",
         f"{EP}.storageConfig.inKube", "no effect with type: HTTPMetric"),
        ("endpoints.0.probeInterval", 5, f"{EP}.probeInterval", "unknown field"),
        ("probeIntervalSecond", 5, "plugins[0].config.probeIntervalSecond",
         "did you mean 'probeIntervalSeconds'"),
    ],
)
def test_bad_values_name_the_field(path: str, value: Any, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(broken(path, value))
    assert info.value.path == field
    assert words in info.value.problem
    assert str(info.value).startswith(f"config.yaml: {field}: ")


def test_bad_metric_name() -> None:
    config = {"endpoints": [{"url": "http://127.0.0.1/", "storageConfig": {
        "type": "HTTPMetric", "httpMetric": {"metricName": "players-count"}}}]}
    with pytest.raises(ConfigError) as info:
        parse(config)
    assert info.value.path == f"{EP}.storageConfig.httpMetric.metricName"


def test_good_config_parses() -> None:
    cfg = parse(GOOD)
    assert [p.state for p in cfg.endpoints[0].storage.marker_policies] == [
        "idle", "WaitToBeDeleted"
    ]
