"""The result-store interface every backend implements.

Plugins describe *what* to record (a hot-update result, a probe's markers);
the store decides *how* (SQLite rows, pod annotations + a result ConfigMap +
Events). One process owns every store so the Kubernetes client is imported
once; plugins hold a proxy with this same interface.
"""

from __future__ import annotations

import abc
import json
import time
from dataclasses import dataclass, field
from typing import Any

from kidecar_supervisor.config_reader import REQUIRED, ConfigReader

STORAGE_TYPES = ("InKube", "Local", "HTTPMetric")
DEFAULT_RESULT_CONFIGMAP = "sidecar-result"
DEFAULT_RESULT_NAMESPACE = "kube-system"


@dataclass(frozen=True)
class TargetRef:
    """A Kubernetes object by group/version/resource/namespace/name (templated)."""

    group: str
    version: str
    resource: str
    name: str
    namespace: str = ""
    #: the Go kidecar's ``podOwner: true``: the pod's controlling owner is the target
    #: (group/version/resource/name then come from its ownerReference; see targets.py)
    pod_owner: bool = False

    @classmethod
    def parse(cls, reader: ConfigReader) -> TargetRef:
        owner = reader.bool("podOwner", default=False)
        ref = cls(
            group=reader.str("group", default="", allow_empty=True),
            version=reader.str("version", default="" if owner else REQUIRED),
            resource=reader.str("resource", default="" if owner else REQUIRED),
            name=reader.str("name", default="" if owner else REQUIRED),
            namespace=reader.str("namespace", default="", allow_empty=True),
            pod_owner=owner,
        )
        reader.reject_unknown()
        return ref


@dataclass(frozen=True)
class MarkerPolicy:
    """OpenKruise PodProbeMarker-style policy: a probed state and its markers."""

    state: str
    game_server_ops_state: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    #: the Go kidecar's ``jsonPathConfigs``: (JSON pointer in the target, value) written
    #: when the state matches
    target_values: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, reader: ConfigReader) -> MarkerPolicy:
        policy = cls(
            state=reader.str("state"),
            game_server_ops_state=reader.str("gameServerOpsState", default=""),
            labels=tuple(sorted(reader.str_map("labels", default={}).items())),
            annotations=tuple(sorted(reader.str_map("annotations", default={}).items())),
            target_values=tuple(_parse_target_value(r) for r in reader.children("jsonPathConfigs")),
        )
        reader.reject_unknown()
        return policy


def _parse_target_value(reader: ConfigReader) -> tuple[str, str]:
    """One ``jsonPathConfigs`` entry: ``{jsonPath: /spec/x, fieldType, value}`` (the Go
    kidecar's: a JSON pointer into the target, replaced by ``value``)."""
    pointer = reader.str("jsonPath")
    if not pointer.startswith("/"):
        raise reader.error("jsonPath", f"must be a JSON pointer starting with '/', got {pointer!r}")
    reader.str("fieldType", default="string", choices=("string", "int", "float", "number", "bool"))
    value = reader.raw("value")
    if isinstance(value, dict | list) or value is None:
        raise reader.error("value", "must be a string, number or boolean")
    reader.reject_unknown()
    return pointer, str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class StorageConfig:
    """A plugin's ``storageConfig``: which backend, and its ``inKube`` settings."""

    type: str = "Local"
    annotation_key: str = ""
    label_key: str = ""
    result_configmap: str = DEFAULT_RESULT_CONFIGMAP
    result_namespace: str = DEFAULT_RESULT_NAMESPACE
    target: TargetRef | None = None
    json_path: str = ""
    marker_policies: tuple[MarkerPolicy, ...] = ()
    #: caps on the Kubernetes write journal (``inKube.journal``): pending entries, bytes
    journal_max_entries: int = 5000
    journal_max_bytes: int = 32 * 1024 * 1024

    @classmethod
    def parse(cls, reader: ConfigReader) -> StorageConfig:
        kind = reader.str("type", default="Local", choices=STORAGE_TYPES)
        inkube = reader.child("inKube")
        values: dict[str, Any] = {"type": kind}
        if inkube is not None:
            values.update(
                annotation_key=inkube.str("annotationKey", default=""),
                label_key=inkube.str("labelKey", default=""),
                json_path=inkube.str("jsonPath", default=""),
                marker_policies=tuple(
                    MarkerPolicy.parse(r)
                    for r in inkube.children("markerPolicies", "markerPolices")
                ),
            )
            target = inkube.child("target")
            if target is not None:
                values["target"] = TargetRef.parse(target)
            journal = inkube.child("journal")
            if journal is not None:
                values["journal_max_entries"] = journal.int("maxEntries", default=5000,
                                                            minimum=10)
                values["journal_max_bytes"] = journal.int("maxBytes", default=32 * 1024 * 1024,
                                                          minimum=64 * 1024)
                journal.reject_unknown()
            result = inkube.child("resultConfigMap")
            if result is not None:
                values["result_configmap"] = result.str("name", default=DEFAULT_RESULT_CONFIGMAP)
                values["result_namespace"] = result.str(
                    "namespace", default=DEFAULT_RESULT_NAMESPACE
                )
                result.reject_unknown()
            if values["json_path"] and not values["json_path"].startswith("/"):
                raise inkube.error("jsonPath", "must be a JSON pointer starting with '/', "
                                   f"got {values['json_path']!r}")
            inkube.reject_unknown()
        reader.reject_unknown()
        return cls(**values)


@dataclass
class ResultRecord:
    """One plugin result (e.g. a hot update) as stored and read back."""

    plugin: str
    version: str
    url: str = ""
    success: bool = True
    message: str = ""
    timestamp: float = field(default_factory=time.time)
    sha256: str = ""
    pod: str = ""
    workload: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "plugin": self.plugin, "version": self.version, "url": self.url,
            "success": self.success, "message": self.message, "timestamp": self.timestamp,
            "sha256": self.sha256, "pod": self.pod, "workload": self.workload,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass
class MarkerUpdate:
    """Markers a probe state implies: keys mapped to None are removed.

    ``target_value`` is written at the storage config's target + jsonPath (or
    the GameServer's ``/spec/opsState``); None leaves the target untouched.
    """

    labels: dict[str, str | None] = field(default_factory=dict)
    annotations: dict[str, str | None] = field(default_factory=dict)
    target_value: str | None = None


#: what a write did: written now, or journaled on disk to be written later
WRITTEN = "written"
JOURNALED = "journaled"
#: some parts of a result were refused for good, others recorded (``partial_outcome``)
PARTIAL = "partial"
REFUSED = "refused"
#: the parts of a result each backend writes, by the names callers show
RESULT_PARTS = {"InKube": ("pod", "store", "event"), "Local": ("store",)}


def partial_outcome(parts: dict[str, str]) -> str:
    """``record_result``'s answer when a part was refused for good but others were recorded.

    ``parts`` maps each part (``pod``: the annotation, ``store``: the result
    ConfigMap, ``event``) to WRITTEN, JOURNALED or ``refused: <why>``. Plain
    text, so it crosses the storage process's pipe like WRITTEN does.
    """
    return f"{PARTIAL} {json.dumps(parts, sort_keys=True)}"


def recorded_parts(outcome: str, store_type: str) -> dict[str, bool]:
    """Which parts of a result are recorded (written, or journaled to be written) after
    ``record_result`` answered ``outcome``; anything else (an error text) is none."""
    names = RESULT_PARTS.get(store_type, ("store",))
    if outcome.startswith(PARTIAL + " "):
        try:
            parts = json.loads(outcome[len(PARTIAL) + 1:])
        except ValueError:
            parts = {}
        return {name: str(parts.get(name, "")) in (WRITTEN, JOURNALED) for name in names}
    recorded = outcome in (WRITTEN, JOURNALED)
    return dict.fromkeys(names, recorded)


class ResultStore(abc.ABC):
    """Where results and markers go. Every method may be called from any thread."""

    @abc.abstractmethod
    def record_result(self, record: ResultRecord) -> str:
        """Durably record ``record`` for this pod and its workload; WRITTEN or JOURNALED,
        or a ``partial_outcome`` when some part was refused for good (raises if all were)."""

    @abc.abstractmethod
    def latest_for_pod(self, plugin: str) -> ResultRecord | None:
        """This pod's latest *successful* result of ``plugin`` (survives container restarts)."""

    @abc.abstractmethod
    def latest_for_workload(self, plugin: str) -> ResultRecord | None:
        """The newest *successful* result any pod of this workload reached (never another's)."""

    @abc.abstractmethod
    def apply_markers(self, update: MarkerUpdate) -> str:
        """Set/remove labels, annotations and the target field; WRITTEN or JOURNALED."""

    @abc.abstractmethod
    def emit_event(self, reason: str, message: str, warning: bool = False) -> None:
        """Record a human-readable event (a Kubernetes Event on the pod for InKube)."""

    def watch_annotation(self, key: str, revision: int, wait: float) -> dict[str, Any]:
        """Long-poll annotation ``key`` of this pod (issue 11's desired version): answers
        once the pod's annotations pass ``revision`` or after ``wait`` seconds, as
        ``{"revision", "value", "synced", "supported"}``. Only InKube has a pod to watch."""
        return {"revision": 0, "value": None, "synced": False, "supported": False}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources."""
