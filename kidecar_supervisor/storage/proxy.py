"""A ResultStore that forwards every call to the storage process over the pipe.

Plugins hold this proxy, so the Kubernetes client (65 MiB once an API object
exists) lives in one process only, and all writes of the pod pass one place
that can coalesce them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kidecar_supervisor.protocol import STORAGE, STORE_METHOD, store_params
from kidecar_supervisor.storage.base import MarkerUpdate, ResultRecord, ResultStore, StorageConfig

#: a write may wait for API retries (or journal) inside the storage process
_WRITE_TIMEOUT = 120.0
_READ_TIMEOUT = 60.0


class RemoteStore(ResultStore):
    def __init__(self, call: Callable[..., Any], cfg: StorageConfig) -> None:
        self._call = call
        self.cfg = cfg

    def _op(self, op: str, timeout: float, *args: Any) -> Any:
        return self._call(STORAGE, STORE_METHOD, store_params(self.cfg, op, *args),
                          timeout=timeout)

    def record_result(self, record: ResultRecord) -> str:
        return str(self._op("record_result", _WRITE_TIMEOUT, record))

    def latest_for_pod(self, plugin: str) -> ResultRecord | None:
        result: ResultRecord | None = self._op("latest_for_pod", _READ_TIMEOUT, plugin)
        return result

    def latest_for_workload(self, plugin: str) -> ResultRecord | None:
        result: ResultRecord | None = self._op("latest_for_workload", _READ_TIMEOUT, plugin)
        return result

    def apply_markers(self, update: MarkerUpdate) -> str:
        return str(self._op("apply_markers", _WRITE_TIMEOUT, update))

    def emit_event(self, reason: str, message: str, warning: bool = False) -> None:
        self._op("emit_event", _WRITE_TIMEOUT, reason, message, warning)

    def watch_annotation(self, key: str, revision: int, wait: float) -> dict[str, Any]:
        answer: dict[str, Any] = self._op("watch_annotation", wait + _READ_TIMEOUT, key,
                                          revision, wait)
        return answer
