"""Results written before the sharded layout, read for recovery only (never rewritten).

Two older writers left results in the single result ConfigMap
(``resultConfigMap``, default ``kube-system/sidecar-result``) and on the pod:

* this project before the shards: pod keys ``<plugin>_<ns>_<pod>`` →
  ``["v3",true,t]`` (no URL) and workload keys ``<plugin>_<ns>_<Kind>_<name>``
  → the newest successful result with its URL (``result_codec``);
* the Go kidecar (magicsong/kidecar): the pod annotation value
  ``"<version>: Update success"`` and keys ``<namespace>-<pod>`` whose value
  is YAML ``{hot_update: {<version>: <url>, ...}}``; the newest version is the
  highest in version order (``version_key``: ``v10`` after ``v9``).

A Go key names a pod, not its workload. The pods of a workload are named
``<workload>-<suffix>`` (GameServerSet and StatefulSet: an ordinal; a
Deployment's ReplicaSet: ``<hash>-<5 chars>``; others: ``<5 chars>``), so the
keys of this namespace with that prefix and suffix shape are the workload's.
The legacy ConfigMap is read once per sidecar (at recovery), never written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from kidecar_supervisor.storage import result_codec as codec
from kidecar_supervisor.storage.base import ResultRecord
from kidecar_supervisor.storage.workload import Workload

GO_SUCCESS = re.compile(r"^\s*(?P<version>\S+?)\s*:\s*Update success\s*$")
_PIECES = re.compile(r"\d+|[A-Za-z]+")
_SUFFIX = {
    "GameServerSet": re.compile(r"^\d+$"),
    "StatefulSet": re.compile(r"^\d+$"),
    "Deployment": re.compile(r"^[a-z0-9]+-[a-z0-9]{5}$"),
}
_ANY_SUFFIX = re.compile(r"^[a-z0-9]{5}$")


def version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key in version order: numbers compare as numbers (v9 < v10 < v10.1)."""
    return tuple((1, int(p), "") if p.isdigit() else (0, 0, p.lower())
                 for p in _PIECES.findall(version))


def go_annotation_version(text: str | None) -> str | None:
    """The version of a Go kidecar annotation ``"v2: Update success"`` (None otherwise)."""
    match = GO_SUCCESS.match(text or "")
    return match.group("version") if match else None


def go_versions(value: str | None, plugin: str) -> dict[str, str]:
    """version → URL of one Go key's YAML value, for ``plugin`` (``hot_update``)."""
    try:
        data = yaml.load(value or "", Loader=yaml.BaseLoader)  # every scalar a string
    except yaml.YAMLError:
        return {}
    if not isinstance(data, dict):
        return {}
    found = data.get(plugin)
    if not isinstance(found, dict):
        return {}
    return {str(k): str(v) for k, v in found.items() if isinstance(k, str)}


def newest(versions: Mapping[str, str], plugin: str, pod: str = "",
           workload: str = "") -> ResultRecord | None:
    """The highest version of ``versions`` as a record (time 0: older than any of ours)."""
    if not versions:
        return None
    version = max(versions, key=version_key)
    return ResultRecord(plugin=plugin, version=version, url=versions[version], success=True,
                        timestamp=0.0, pod=pod, workload=workload)


class LegacyRecords:
    """One read of the single result ConfigMap's data, answering recovery questions."""

    def __init__(self, data: Mapping[str, str], pod_namespace: str) -> None:
        self.data = data
        self.ns = pod_namespace

    def for_pod(self, plugin: str, pod: str, workload: Workload) -> ResultRecord | None:
        """This pod's latest success: our old pod key (URL from the old workload entry,
        when it names the same version) or the Go kidecar's ``<ns>-<pod>`` key."""
        found: list[ResultRecord] = []
        entry = codec.parse_pod_entry(self.data.get(codec.pod_key(plugin, self.ns, pod), ""))
        old_workload = self.old_workload(plugin, workload)
        if entry is not None and entry[1] and old_workload is not None \
                and old_workload.version == entry[0]:
            found.append(ResultRecord(plugin=plugin, version=entry[0], url=old_workload.url,
                                      sha256=old_workload.sha256, timestamp=float(entry[2]),
                                      pod=pod, workload=str(workload)))
        go = newest(go_versions(self.data.get(f"{self.ns}-{pod}"), plugin), plugin, pod,
                    str(workload))
        if go is not None:
            found.append(go)
        return max(found, key=lambda r: r.timestamp) if found else None

    def go_url(self, plugin: str, pod: str, version: str) -> str:
        """The URL the Go kidecar recorded for this pod's ``version`` ("" if none)."""
        return go_versions(self.data.get(f"{self.ns}-{pod}"), plugin).get(version, "")

    def old_workload(self, plugin: str, workload: Workload) -> ResultRecord | None:
        return codec.parse_workload_entry(
            self.data.get(codec.workload_key(plugin, self.ns, workload)), plugin, str(workload))

    def for_workload(self, plugin: str, workload: Workload) -> ResultRecord | None:
        """The workload's newest success: our old workload key, else the newest version
        the Go kidecar recorded for any pod of the workload."""
        ours = self.old_workload(plugin, workload)
        if ours is not None:
            return ours
        prefix = f"{self.ns}-{workload.name}-"
        shape = _SUFFIX.get(workload.kind, _ANY_SUFFIX)
        versions: dict[str, str] = {}
        for key, value in self.data.items():
            if key.startswith(prefix) and shape.match(key[len(prefix):]):
                versions.update(go_versions(value, plugin))
        return newest(versions, plugin, workload=str(workload))


def configmap_data(obj: Mapping[str, Any] | None) -> dict[str, str]:
    data = (obj or {}).get("data") or {}
    return {str(k): str(v) for k, v in data.items()}
