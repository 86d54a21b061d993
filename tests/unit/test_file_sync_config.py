"""file_sync config: the documented keys parse, every mistake names its field."""

from __future__ import annotations

from typing import Any

import pytest

from kidecar_supervisor.config import parse_config
from kidecar_supervisor.config_reader import ConfigError, ConfigReader
from workers.file_sync.config import (
    DEFAULT_REQUEST_DEADLINE,
    FileSyncConfig,
    resolve_version,
)

BASE: dict[str, Any] = {"srcDir": "/opt/kidecar/files", "dstDir": "/app/downloads",
                        "loadPatchType": "signal",
                        "signal": {"processName": "nginx: master", "signalName": "HUP"}}


def parse(**changes: Any) -> FileSyncConfig:
    data = {**BASE, **changes}
    data = {k: v for k, v in data.items() if v is not None}
    return FileSyncConfig.parse(ConfigReader(data, "plugins[0].config", "f.yaml"))


def test_minimal_signal_config_defaults() -> None:
    cfg = parse()
    assert cfg.signal is not None and cfg.signal.signal_name == "SIGHUP"
    assert not cfg.watch.enabled and cfg.storage.type == "Local"
    assert resolve_version(cfg, "ab" * 32) == "sha256-" + "ab" * 6


def test_request_deadline_defaults_longer_than_hot_update_but_is_settable() -> None:
    cfg = parse(loadPatchType="request", signal=None,
                request={"url": "http://127.0.0.1:3000/reload"})
    assert cfg.request is not None and cfg.request.deadline_seconds == DEFAULT_REQUEST_DEADLINE
    cfg = parse(loadPatchType="request", request={"url": "http://x/r", "deadlineSeconds": 7})
    assert cfg.request is not None and cfg.request.deadline_seconds == 7


def test_watch_block_enables_unless_told_otherwise() -> None:
    assert parse(watch={"debounceSeconds": 2}).watch.enabled
    off = parse(watch={"enabled": False}).watch
    assert not off.enabled and off.ignore == (".*",)


def test_version_from_env_or_config() -> None:
    cfg = parse(versionEnv="FILES_VERSION")
    assert resolve_version(cfg, "", {"FILES_VERSION": "v12"}) == "v12"
    with pytest.raises(ValueError, match="FILES_VERSION is not set"):
        resolve_version(cfg, "", {})
    with pytest.raises(ValueError, match="not a usable version"):
        resolve_version(cfg, "", {"FILES_VERSION": "has space"})
    assert resolve_version(parse(version="1.2.3"), "ff" * 32) == "1.2.3"


@pytest.mark.parametrize("changes, field, problem", [
    ({"srcDir": "files"}, "plugins[0].config.srcDir", "must be an absolute path"),
    ({"dstDir": None}, "plugins[0].config.dstDir", "is required"),
    ({"dstDir": "/opt/kidecar/files"}, "plugins[0].config.dstDir", "must not be srcDir"),
    ({"dstDir": "/opt/kidecar/files/out"}, "plugins[0].config.dstDir", "must not be srcDir"),
    ({"srcDir": "/app/downloads/src"}, "plugins[0].config.dstDir", "must not be srcDir"),
    ({"loadPatchType": "inotify"}, "plugins[0].config.loadPatchType", "must be one of"),
    ({"signal": None}, "plugins[0].config.signal", "is required when loadPatchType is signal"),
    ({"loadPatchType": "request"}, "plugins[0].config.request", "is required"),
    ({"signal": {"processName": "x", "signalName": "SIGNOPE"}},
     "plugins[0].config.signal.signalName", "unknown signal"),
    ({"version": "v1", "versionEnv": "X"}, "plugins[0].config.versionEnv", "either version"),
    ({"version": "v 1"}, "plugins[0].config.version", "does not match"),
    ({"versionEnv": "1BAD"}, "plugins[0].config.versionEnv", "does not match"),
    ({"watch": {"debounceSeconds": -1}}, "plugins[0].config.watch.debounceSeconds",
     "at least 0"),
    ({"watch": {"intervalSeconds": 0}}, "plugins[0].config.watch.intervalSeconds", "at least"),
    ({"watch": {"debounce": 1}}, "plugins[0].config.watch.debounce", "unknown field"),
    ({"srcdirs": "/x"}, "plugins[0].config.srcdirs", "unknown field (did you mean 'srcDir'?)"),
    ({"storageConfig": {"type": "Cloud"}}, "plugins[0].config.storageConfig.type",
     "must be one of"),
])
def test_mistakes_name_the_field(changes: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(**changes)
    assert info.value.path == field and problem in info.value.problem
    assert info.value.source == "f.yaml"


def test_whole_sidecar_config_knows_the_plugin() -> None:
    config = parse_config({"plugins": [{"name": "file_sync", "config": BASE}]}, "k.yaml")
    spec = config.plugin("file_sync")
    assert spec is not None and isinstance(spec.config, FileSyncConfig)
