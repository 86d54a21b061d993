"""The pods of a rollout as the API shows them, and the one write: the desired version.

One list of pods (label selector) and one list of GameServers per pass, not
one request per pod: at 1,000 pods a pass is two requests.
"""

from __future__ import annotations

import json
from typing import Any

from kidecar_supervisor.rollout.plan import Observed, parse_result
from kidecar_supervisor.rollout.spec import RolloutSpec
from kidecar_supervisor.storage.kube_api import (
    KubeClient,
    KubeForbidden,
    KubeNotFound,
    ResourcePath,
)

GAMESERVERS = ResourcePath("game.kruise.io", "v1alpha1", "gameservers")


class Fleet:
    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._no_gameservers = False

    def pods(self, spec: RolloutSpec) -> list[Observed]:
        """Selected pods (not being deleted), with result, desired value and opsState."""
        answer = self.client.get(ResourcePath("", "v1", "pods", self.namespace),
                                 query={"labelSelector": spec.selector})
        states = self.ops_states(spec)
        out = []
        for pod in answer.get("items", []):
            meta = pod.get("metadata") or {}
            if meta.get("deletionTimestamp"):
                continue
            notes = meta.get("annotations") or {}
            name = str(meta["name"])
            out.append(Observed(name=name, result=parse_result(notes.get(spec.result_annotation)),
                                desired=notes.get(spec.desired_annotation),
                                ops_state=states.get(name), labels=meta.get("labels") or {}))
        return sorted(out, key=lambda p: p.name)

    def ops_states(self, spec: RolloutSpec) -> dict[str, str]:
        """GameServer name (= its pod's name) → spec.opsState (``None`` when unset)."""
        if self._no_gameservers:
            return {}
        path = ResourcePath(GAMESERVERS.group, GAMESERVERS.version, GAMESERVERS.resource,
                            self.namespace)
        try:
            # every GameServer of the namespace, matched by name: a GameServer's pod has
            # its name, and its labels are not guaranteed to be the pod's
            answer = self.client.get(path)
        except KubeNotFound:  # no OpenKruise Game here: Deployments, StatefulSets
            self._no_gameservers = True
            return {}
        except KubeForbidden:
            raise
        return {str(gs["metadata"]["name"]): str((gs.get("spec") or {}).get("opsState")
                                                 or "None")
                for gs in answer.get("items", [])}

    def write_desired(self, pod: str, spec: RolloutSpec, value: dict[str, Any] | None) -> None:
        """Set (or with None remove) the desired-version annotation of ``pod``."""
        text = None if value is None else json.dumps(value, sort_keys=True,
                                                     separators=(",", ":"))
        self.client.merge_patch(ResourcePath("", "v1", "pods", self.namespace, pod),
                                {"metadata": {"annotations": {spec.desired_annotation: text}}})


def desired_text(value: dict[str, Any]) -> str:
    """The annotation's exact text for ``value`` (as ``write_desired`` writes it)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
