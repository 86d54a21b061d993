"""The pods of a rollout as the API shows them, and the one write: the desired version.

One list of pods (label selector) and one list of GameServers per pass, not
one request per pod: at 1,000 pods a pass is eight requests (pages of 250, so
the driver's memory holds one page of full objects, not the whole fleet).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from kidecar_supervisor.rollout.plan import Observed, parse_result
from kidecar_supervisor.rollout.spec import RolloutSpec
from kidecar_supervisor.storage.kube_api import KubeClient, KubeNotFound, ResourcePath

GAMESERVERS = ResourcePath("game.kruise.io", "v1alpha1", "gameservers")
#: list page size: the driver holds one page of full objects at a time, not the fleet's
PAGE = 250


class Fleet:
    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._no_gameservers = False

    def pods(self, spec: RolloutSpec) -> list[Observed]:
        """Selected pods (not being deleted), with result, desired value and opsState."""
        states = self.ops_states(spec)
        out = []
        for pod in self._pages(ResourcePath("", "v1", "pods", self.namespace),
                               {"labelSelector": spec.selector}):
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
            return {str(gs["metadata"]["name"]): str((gs.get("spec") or {}).get("opsState")
                                                     or "None")
                    for gs in self._pages(path, {})}
        except KubeNotFound:  # no OpenKruise Game here: Deployments, StatefulSets
            self._no_gameservers = True
            return {}

    def _pages(self, path: ResourcePath, query: dict[str, str]) -> Iterator[dict[str, Any]]:
        """The items of a list, ``PAGE`` at a time (limit/continue)."""
        token = ""
        while True:
            page = self.client.get(path, query={**query, "limit": str(PAGE),
                                                **({"continue": token} if token else {})})
            yield from page.get("items", [])
            token = str((page.get("metadata") or {}).get("continue") or "")
            if not token:
                return

    def write_desired(self, pod: str, spec: RolloutSpec, value: dict[str, Any] | None) -> None:
        """Set (or with None remove) the desired-version annotation of ``pod``."""
        text = None if value is None else json.dumps(value, sort_keys=True,
                                                     separators=(",", ":"))
        self.client.merge_patch(ResourcePath("", "v1", "pods", self.namespace, pod),
                                {"metadata": {"annotations": {spec.desired_annotation: text}}})


def desired_text(value: dict[str, Any]) -> str:
    """The annotation's exact text for ``value`` (as ``write_desired`` writes it)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
