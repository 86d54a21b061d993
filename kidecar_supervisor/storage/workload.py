"""Which workload a pod belongs to, read from the pod object alone.

A new pod of a workload comes back on the newest version any pod of that
workload reached, so the workload must be named the same by every pod and
never be confused with another one. OpenKruise Game labels each pod with its
GameServerSet (``game.kruise.io/owner-gss``); otherwise the controller
ownerReference names it (StatefulSet, ReplicaSet, CloneSet...). A Deployment's
ReplicaSet changes on every rollout, so a ReplicaSet whose name is
``<deployment>-<pod-template-hash>`` is mapped to its Deployment, without
needing RBAC on ReplicaSets. A pod without a controller is its own workload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OWNER_GSS_LABEL = "game.kruise.io/owner-gss"
TEMPLATE_HASH_LABEL = "pod-template-hash"


@dataclass(frozen=True)
class Workload:
    """A workload by kind and name (its namespace is the pod's)."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> Workload:
        kind, _, name = text.partition("/")
        if not kind or not name:
            raise ValueError(f"workload must be Kind/name, got {text!r}")
        return cls(kind, name)


def workload_of(pod: Mapping[str, Any]) -> Workload:
    """The workload owning ``pod`` (see the module docstring for the rules)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    gss = labels.get(OWNER_GSS_LABEL)
    if gss:
        return Workload("GameServerSet", gss)
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") and ref.get("name"):
            return _deployment_of(ref["kind"], ref["name"], labels.get(TEMPLATE_HASH_LABEL))
    return Workload("Pod", str(meta.get("name") or ""))


def _deployment_of(kind: str, name: str, template_hash: str | None) -> Workload:
    suffix = f"-{template_hash}" if template_hash else ""
    if kind == "ReplicaSet" and suffix and name.endswith(suffix) and len(name) > len(suffix):
        return Workload("Deployment", name[: -len(suffix)])
    return Workload(kind, name)
