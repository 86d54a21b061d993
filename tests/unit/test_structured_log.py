"""Which part of the tree a JSON log line names: the process's role, except the store,
which runs on a thread of the HTTP child and still says ``storage``."""

from __future__ import annotations

import json
import logging

from kidecar_supervisor import structured_log
from kidecar_supervisor.structured_log import JsonFormatter


def _line(logger: str, **extra: object) -> dict[str, object]:
    record = logging.LogRecord(logger, logging.INFO, __file__, 1, "hello %s", ("x",), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return dict(json.loads(JsonFormatter().format(record)))


def test_the_store_speaks_as_storage_inside_the_http_child(monkeypatch) -> None:
    monkeypatch.setattr(structured_log, "_process_role", "http")
    assert _line("kidecar.storage.inkube")["plugin"] == "storage"
    assert _line("kidecar.plugin.storage")["plugin"] == "storage"
    assert _line("kidecar.http")["plugin"] == "http"
    assert _line("kidecar.storagex")["plugin"] == "http"  # a logger's name, not a prefix
    assert _line("kidecar.storage.journal", plugin="hot_update")["plugin"] == "hot_update"
    line = _line("urllib3.connectionpool")
    assert line["plugin"] == "http" and line["logger"] == "urllib3.connectionpool"
    assert line["msg"] == "hello x"
