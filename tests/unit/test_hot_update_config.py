"""hot_update config: the seed documents parse as they are; bad values name their field."""

from __future__ import annotations

import signal

import pytest
import yaml

from kidecar_supervisor.config_reader import ConfigError, ConfigReader
from workers.hot_update.config import HotUpdateConfig

SEED = """
loadPatchType: signal
signal:
  processName: 'nginx: master process nginx'
  signalName: SIGHUP
fileDir: /app/downloads
storageConfig:
  type: InKube
  inKube:
    annotationKey: sidecar.vke.volcengine.com/hot-update-result
"""


def parse(doc: dict | str) -> HotUpdateConfig:
    data = yaml.safe_load(doc) if isinstance(doc, str) else doc
    return HotUpdateConfig.parse(ConfigReader(data, "plugins[0].config", "config.yaml"))


def test_seed_document_parses_as_is() -> None:
    cfg = parse(SEED)
    assert cfg.load_patch_type == "signal"
    assert cfg.signal is not None
    assert cfg.signal.process_name == "nginx: master process nginx"
    assert cfg.signal.signal_number == signal.SIGHUP
    assert cfg.file_dir == "/app/downloads"
    assert cfg.storage.type == "InKube"
    assert cfg.storage.annotation_key == "sidecar.vke.volcengine.com/hot-update-result"
    assert cfg.max_file_bytes == 1 << 30
    assert cfg.allow_file_urls is False


def test_design_document_with_both_sections_and_lowercase_keys() -> None:
    cfg = parse({
        "loadpatchtype": "Request",
        "signal": {"processname": "nginx: master process", "signalname": "HUP"},
        "request": {"url": "http://127.0.0.1:3000/reload", "method": "get",
                    "timeoutSeconds": 2, "deadlineSeconds": 9, "expectedStatus": 204},
        "filedir": "/app/downloads",
        "maxFileBytes": "512Mi", "downloadTimeoutSeconds": 5,
    })
    assert cfg.load_patch_type == "request"
    assert cfg.request is not None and cfg.request.method == "GET"
    assert cfg.request.expected_status == 204 and cfg.request.is_success(204)
    assert not cfg.request.is_success(200)
    assert cfg.max_file_bytes == 512 << 20
    assert cfg.storage.type == "Local"


@pytest.mark.parametrize("name, number", [
    ("SIGHUP", signal.SIGHUP), ("HUP", signal.SIGHUP), ("sigusr1", signal.SIGUSR1),
    ("USR2", signal.SIGUSR2), (10, 10),
])
def test_signal_names(name: object, number: int) -> None:
    cfg = parse({"loadPatchType": "signal", "fileDir": "/x",
                 "signal": {"processName": "game", "signalName": name}})
    assert cfg.signal is not None and cfg.signal.signal_number == number


@pytest.mark.parametrize("doc, path, problem", [
    ({"loadPatchType": "signal", "fileDir": "/x",
      "signal": {"processName": "g", "signalName": "SIGNOPE"}},
     "plugins[0].config.signal.signalName", "unknown signal 'SIGNOPE'"),
    ({"loadPatchType": "signal", "fileDir": "/x"}, "plugins[0].config.signal", "is required"),
    ({"loadPatchType": "request", "fileDir": "/x"}, "plugins[0].config.request", "is required"),
    ({"loadPatchType": "poke", "fileDir": "/x"}, "plugins[0].config.loadPatchType",
     "must be one of signal, request"),
    ({"loadPatchType": "signal", "signal": {"processName": "g"}, "fileDir": ""},
     "plugins[0].config.fileDir", "must not be empty"),
    ({"loadPatchType": "signal", "signal": {"processName": "g"}, "fileDir": "rel/dir"},
     "plugins[0].config.fileDir", "absolute path"),
    ({"loadPatchType": "request", "fileDir": "/x", "request": {"url": "ftp://h/r"}},
     "plugins[0].config.request.url", "http(s) URL"),
    ({"loadPatchType": "signal", "signal": {"processName": "g"}, "fileDir": "/x",
      "maxFileBytes": "lots"}, "plugins[0].config.maxFileBytes", "byte count"),
    ({"loadPatchType": "signal", "signal": {"processName": "g"}, "fileDir": "/x",
      "downloadTimeoutSeconds": -1}, "plugins[0].config.downloadTimeoutSeconds",
     "greater than 0"),
    ({"loadPatchType": "signal", "signal": {"processName": "g"}, "fileDir": "/x",
      "allowFileUrls": True, "storageConfig": {"type": "InKube"}},
     "plugins[0].config.allowFileUrls", "only allowed with storageConfig.type Local"),
    ({"loadPatchType": "signal", "signal": {"processName": "g", "signalNme": "HUP"},
      "fileDir": "/x"}, "plugins[0].config.signal.signalNme", "did you mean 'signalName'"),
    ({"loadPatchType": "signal", "signal": {"processName": "g"}, "fileDir": "/x",
      "storageConfig": {"type": "Cloud"}}, "plugins[0].config.storageConfig.type",
     "must be one of"),
])
def test_bad_config_names_field(doc: dict, path: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(doc)
    assert info.value.path == path
    assert problem in info.value.problem
    assert str(info.value).startswith("config.yaml: " + path)


def test_file_dir_defaults_to_the_designs_shared_dir() -> None:
    """The seeds' documents omit fileDir; they must still validate."""
    from kidecar_supervisor.config import parse_config

    config = parse_config({"plugins": [{"name": "hot_update", "config": {
        "loadPatchType": "signal", "signal": {"processName": "g", "signalName": "SIGHUP"}}}]})
    assert str(config.plugins[0].config.file_dir) == "/app/downloads"
