"""Writing and reading the result ConfigMap without losing anyone's entry.

Every pod writes only its own keys (see ``result_codec``) with a JSON merge
patch, so 200 pods writing at once never overwrite each other: the API
server applies each patch to the current object, no read-modify-write.
Writes of one sidecar to the ConfigMap coalesce (``Coalescer``).

Two cases need the current object and use a resourceVersion precondition
with retries on 409 instead:

* a *late* write (replayed from the journal, or older than ``FRESH_SECONDS``)
  must not roll the workload entry back over a newer version another pod
  wrote meanwhile, so it reads the entry and skips keys that are newer;
* pruning (the data grew past ``PRUNE_ABOVE``) drops the oldest pod entries
  and strips ``managedFields``, which list every key again and would
  otherwise push the stored object past etcd's request limit.

A missing ConfigMap is created; a create that races another pod's (409)
falls back to the patch.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from kidecar_supervisor.storage import result_codec as codec
from kidecar_supervisor.storage.base import ResultRecord
from kidecar_supervisor.storage.coalesce import Coalescer
from kidecar_supervisor.storage.kube_api import (
    KubeClient,
    KubeConflict,
    KubeError,
    KubeInvalid,
    KubeNotFound,
    KubeUnavailable,
    ResourcePath,
)
from kidecar_supervisor.storage.patches import JsonObj
from kidecar_supervisor.storage.workload import Workload

log = logging.getLogger("kidecar.storage.configmap")

#: a result older than this is written with the careful (conditional) path
FRESH_SECONDS = 30.0
_CONFLICT_RETRIES = 8


def _too_big(exc: KubeError) -> bool:
    text = str(exc).lower()
    return ("too long" in text or "too large" in text or "1048576" in text
            or exc.status == 413)


class ResultConfigMap:
    """One sidecar's view of the result ConfigMap(s); thread-safe."""

    def __init__(self, client: KubeClient, coalescer: Coalescer) -> None:
        self.client = client
        self.coalescer = coalescer

    @staticmethod
    def path(name: str, namespace: str) -> ResourcePath:
        return ResourcePath("", "v1", "configmaps", namespace, name)

    # -- write -------------------------------------------------------------------
    def write(self, name: str, namespace: str, pod_namespace: str, workload: Workload,
              record: ResultRecord) -> None:
        """Record ``record`` under the pod's key and, if successful, the workload's key."""
        pk = codec.pod_key(record.plugin, pod_namespace, record.pod)
        wk = codec.workload_key(record.plugin, pod_namespace, workload)
        path = self.path(name, namespace)
        if time.time() - record.timestamp > FRESH_SECONDS:
            self._write_late(path, pk, wk, record)
            return
        data = {pk: codec.pod_entry(record)}
        if record.success:
            data[wk] = codec.workload_entry(record)
        self.coalescer.submit(path.url(), {"data": data},
                              lambda patch: self._send(path, patch, frozenset(data)))

    def _send(self, path: ResourcePath, patch: JsonObj, keep: frozenset[str]) -> None:
        """Merge-patch (creating the ConfigMap if needed); prune when it grew too big."""
        try:
            raw = self._patch_or_create(path, patch)
        except (KubeInvalid, KubeUnavailable) as exc:
            if not _too_big(exc):
                raise
            log.warning("result ConfigMap %s is full (%s); pruning old pod entries",
                        path.describe(), exc)
            self.prune(path, keep, force=True)
            raw = self._patch_or_create(path, patch)
        if raw is not None and len(raw) > codec.PRUNE_ABOVE:
            self._prune_from(path, json.loads(raw), keep, force=False)

    def _patch_or_create(self, path: ResourcePath, patch: JsonObj) -> bytes | None:
        try:
            result: bytes = self.client.merge_patch(path, patch, raw=True)
            return result
        except KubeNotFound:
            pass
        data = {k: v for k, v in (patch.get("data") or {}).items() if v is not None}
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": path.name, "namespace": path.namespace}, "data": data}
        try:
            self.client.create(ResourcePath("", "v1", "configmaps", path.namespace), body,
                               raw=True)
            return None
        except KubeConflict:  # another pod created it first: patch that one
            result = self.client.merge_patch(path, patch, raw=True)
            return result

    def _write_late(self, path: ResourcePath, pk: str, wk: str, record: ResultRecord) -> None:
        """Conditional write: keep entries that are newer than this late result."""
        for _ in range(_CONFLICT_RETRIES):
            try:
                current = self.client.get(path)
            except KubeNotFound:
                data = {pk: codec.pod_entry(record)}
                if record.success:
                    data[wk] = codec.workload_entry(record)
                self._send(path, {"data": data}, frozenset(data))
                return
            existing: dict[str, str] = current.get("data") or {}
            data = {}
            old_pod = codec.parse_pod_entry(existing.get(pk, ""))
            if old_pod is None or old_pod[2] <= int(record.timestamp):
                data[pk] = codec.pod_entry(record)
            old_wl = codec.parse_workload_entry(existing.get(wk), record.plugin, "")
            if record.success and (old_wl is None or old_wl.timestamp <= record.timestamp):
                data[wk] = codec.workload_entry(record)
            if not data:
                log.info("late result %s of %s is older than what the ConfigMap holds; "
                         "not written", record.version, record.pod)
                return
            rv = current["metadata"]["resourceVersion"]
            try:
                self._send(path, {"metadata": {"resourceVersion": rv}, "data": data},
                           frozenset(data))
                return
            except KubeConflict:
                continue
        raise KubeUnavailable(f"patch {path.describe()}: still conflicting after "
                              f"{_CONFLICT_RETRIES} tries", 409)

    # -- prune -------------------------------------------------------------------
    def prune(self, path: ResourcePath, keep: frozenset[str] = frozenset(),
              force: bool = False) -> list[str]:
        """Drop the oldest pod entries if the data is past the threshold; the dropped keys."""
        for _ in range(_CONFLICT_RETRIES):
            try:
                current = self.client.get(path)
            except KubeNotFound:
                return []
            try:
                return self._prune_from(path, current, keep, force)
            except KubeConflict:
                continue
        return []

    def _prune_from(self, path: ResourcePath, current: dict[str, Any], keep: frozenset[str],
                    force: bool) -> list[str]:
        data = current.get("data") or {}
        above = 0 if force else codec.PRUNE_ABOVE
        dropped = codec.prune_keys(data, above=above, to=codec.PRUNE_TO, keep=keep)
        if not dropped and not force:
            return []
        patch = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"],
                              "managedFields": [{}]},
                 "data": dict.fromkeys(dropped)}
        self.client.merge_patch(path, patch, raw=True)
        log.info("pruned %d old pod entries from %s (%d → ≤%d bytes)", len(dropped),
                 path.describe(), codec.data_size(data), codec.PRUNE_TO)
        return dropped

    # -- read --------------------------------------------------------------------
    def read_workload(self, name: str, namespace: str, pod_namespace: str,
                      workload: Workload, plugin: str) -> ResultRecord | None:
        """The newest successful result of ``workload`` (None if it has none)."""
        try:
            current = self.client.get(self.path(name, namespace))
        except KubeNotFound:
            return None
        value = (current.get("data") or {}).get(codec.workload_key(plugin, pod_namespace,
                                                                   workload))
        return codec.parse_workload_entry(value, plugin, str(workload))
