"""Each built-in plugin config declares the stores it writes (``plugin_api.storage_configs``).

The supervisor sends plugin-failure Events to the first InKube store any
plugin declares, so these lists must name every store, in config order.
"""

from __future__ import annotations

from typing import Any

from kidecar_supervisor.config_reader import ConfigReader
from kidecar_supervisor.plugin_api import StorageConfig, storage_configs
from workers.file_sync.config import FileSyncConfig
from workers.hot_update.config import HotUpdateConfig
from workers.http_probe.config import HttpProbeConfig

INKUBE = {"type": "InKube", "inKube": {"annotationKey": "example.com/result"}}


def _parse(config_type: Any, data: dict[str, Any]) -> Any:
    return config_type.parse(ConfigReader(data, "config"))


def test_hot_update_declares_its_storage_config() -> None:
    cfg = _parse(HotUpdateConfig, {"loadPatchType": "signal", "signal": {"processName": "game"},
                                   "storageConfig": INKUBE})
    declared = storage_configs(cfg)
    assert declared == [cfg.storage]
    assert declared[0].type == "InKube" and declared[0].annotation_key == "example.com/result"


def test_hot_update_without_storage_config_declares_the_local_default() -> None:
    cfg = _parse(HotUpdateConfig, {"loadPatchType": "signal", "signal": {"processName": "game"}})
    assert storage_configs(cfg) == [StorageConfig()]


def test_file_sync_declares_its_storage_config() -> None:
    cfg = _parse(FileSyncConfig, {"srcDir": "/src", "dstDir": "/dst", "loadPatchType": "signal",
                                  "signal": {"processName": "game"}, "storageConfig": INKUBE})
    assert [c.type for c in storage_configs(cfg)] == ["InKube"]


def test_http_probe_declares_every_endpoint_in_order() -> None:
    local = {"url": "http://127.0.0.1:8080/a", "storageConfig": {"type": "Local"}}
    inkube = {"url": "http://127.0.0.1:8080/b", "storageConfig": {
        "type": "InKube", "inKube": {"annotationKey": "example.com/state"}}}
    cfg = _parse(HttpProbeConfig, {"endpoints": [local, inkube]})
    declared = storage_configs(cfg)
    assert [c.type for c in declared] == ["Local", "InKube"]
    assert declared[1].annotation_key == "example.com/state"


def test_a_config_without_the_method_declares_nothing() -> None:
    class Bare:
        storage = StorageConfig(type="InKube")

    assert storage_configs(Bare()) == []
