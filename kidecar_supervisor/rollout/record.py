"""The rollout's state: one ConfigMap per rollout, ``kidecar-rollout-<NAME>`` (docs/rollout.md).

Keys: ``spec`` (what is rolled out, JSON), ``status`` (phase, batch, times,
message), ``pods`` (one compact entry per pod: plan.PodEntry.encode) and
``control`` (``pause``/``resume``/``abort``, written by any ``kidecar rollout``
command with a merge patch of that one key).

The driver writes with the object's resourceVersion (an update, never a blind
write): a second driver, or a ``pause`` that landed in between, makes the write
conflict; the driver then reads the object again, keeps the newer ``control``
and its own view of the pods, and writes again. Entries are ~120 bytes, so a
ConfigMap (1 MiB) holds a rollout of about 8,000 pods.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from kidecar_supervisor.rollout.plan import PodEntry
from kidecar_supervisor.rollout.spec import RolloutSpec
from kidecar_supervisor.storage.kube_api import (
    KubeClient,
    KubeConflict,
    KubeNotFound,
    ResourcePath,
)

PREFIX = "kidecar-rollout-"
MANAGED_BY = {"app.kubernetes.io/managed-by": "kidecar-rollout"}
RUNNING = "Running"
PAUSED = "Paused"
ABORTING = "Aborting"
ABORTED = "Aborted"
SUCCEEDED = "Succeeded"
#: done, but some pods stayed busy past the idle timeout and were skipped
COMPLETED_WITH_SKIPS = "CompletedWithSkips"
#: done, but some pods failed (no more than --max-failures): not every pod runs the version
COMPLETED_WITH_FAILURES = "CompletedWithFailures"
TERMINAL = (ABORTED, SUCCEEDED, COMPLETED_WITH_SKIPS, COMPLETED_WITH_FAILURES)
CONTROLS = ("pause", "resume", "abort")


class RecordExists(Exception):
    """A rollout of this name exists and asks something else."""


@dataclass
class RolloutRecord:
    spec: RolloutSpec
    phase: str = RUNNING
    batch: int = 0
    batch_started: float = 0.0
    batch_ended: float = 0.0
    message: str = ""
    created: float = field(default_factory=time.time)
    finished: float = 0.0
    control: str = ""
    entries: dict[str, PodEntry] = field(default_factory=dict)
    resource_version: str = ""

    def status(self) -> dict[str, Any]:
        return {"phase": self.phase, "batch": self.batch, "batchStarted": self.batch_started,
                "batchEnded": self.batch_ended, "message": self.message,
                "created": self.created, "finished": self.finished}

    def to_configmap(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": PREFIX + self.spec.name,
                                "namespace": self.spec.namespace, "labels": dict(MANAGED_BY)}
        if self.resource_version:
            meta["resourceVersion"] = self.resource_version
        pods = {name: entry.encode() for name, entry in sorted(self.entries.items())}
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {
            "spec": json.dumps(self.spec.to_dict(), sort_keys=True),
            "status": json.dumps(self.status(), sort_keys=True),
            "pods": json.dumps(pods, separators=(",", ":")),
            "control": self.control}}

    @classmethod
    def from_configmap(cls, obj: dict[str, Any]) -> RolloutRecord:
        data = obj.get("data") or {}
        status = json.loads(data.get("status") or "{}")
        pods = json.loads(data.get("pods") or "{}")
        return cls(
            spec=RolloutSpec.from_dict(json.loads(data["spec"])),
            phase=str(status.get("phase", RUNNING)), batch=int(status.get("batch", 0)),
            batch_started=float(status.get("batchStarted", 0.0)),
            batch_ended=float(status.get("batchEnded", 0.0)),
            message=str(status.get("message", "")),
            created=float(status.get("created", 0.0)),
            finished=float(status.get("finished", 0.0)),
            control=str(data.get("control") or ""),
            entries={name: PodEntry.decode(value) for name, value in pods.items()},
            resource_version=str(obj.get("metadata", {}).get("resourceVersion", "")),
        )


class RecordStore:
    """Reads and writes rollout records in one namespace."""

    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def _path(self, name: str = "") -> ResourcePath:
        return ResourcePath("", "v1", "configmaps", self.namespace, PREFIX + name if name else "")

    def get(self, name: str) -> RolloutRecord | None:
        try:
            return RolloutRecord.from_configmap(self.client.get(self._path(name)))
        except KubeNotFound:
            return None

    def create_or_continue(self, spec: RolloutSpec) -> tuple[RolloutRecord, bool]:
        """The record of ``spec.name``: created now (True) or the existing one (False)."""
        existing = self.get(spec.name)
        if existing is None:
            record = RolloutRecord(spec=spec)
            try:
                obj = self.client.create(self._path(), record.to_configmap())
            except KubeConflict:
                existing = self.get(spec.name)
            else:
                record.resource_version = obj["metadata"]["resourceVersion"]
                return record, True
        assert existing is not None
        differs = existing.spec.differs_from(spec)
        if differs:
            raise RecordExists(f"rollout {spec.name!r} exists and asks another "
                               f"{', '.join(differs)}; abort it or choose another NAME")
        # the pace may change between runs (e.g. a longer batch timeout)
        existing.spec = spec
        return existing, False

    def save(self, record: RolloutRecord) -> None:
        """Write ``record``; on a conflict keep the newer ``control`` and write again."""
        for _ in range(10):
            try:
                obj = self.client.request("PUT", self._path(record.spec.name),
                                          body=record.to_configmap())
            except KubeConflict:
                fresh = self.get(record.spec.name)
                if fresh is None:
                    raise
                if fresh.phase in TERMINAL and record.phase not in TERMINAL:
                    # another run ended it (an abort): its record wins, nothing to write
                    fresh.spec = record.spec
                    record.__dict__.update(fresh.__dict__)
                    return
                record.control = fresh.control
                record.resource_version = fresh.resource_version
                continue
            record.resource_version = obj["metadata"]["resourceVersion"]
            return
        raise KubeConflict(f"rollout {record.spec.name!r}: 10 conflicting writes in a row")

    def set_control(self, name: str, value: str) -> RolloutRecord:
        """``pause``/``resume``/``abort`` for whichever driver runs (merge patch of one key)."""
        if self.get(name) is None:
            raise KubeNotFound(f"no rollout {name!r} in namespace {self.namespace!r}", 404)
        self.client.merge_patch(self._path(name), {"data": {"control": value}})
        found = self.get(name)
        assert found is not None
        return found

    def list(self) -> list[RolloutRecord]:
        answer = self.client.get(self._path(), query={
            "labelSelector": "app.kubernetes.io/managed-by=kidecar-rollout"})
        return [RolloutRecord.from_configmap(o) for o in answer.get("items", [])]
