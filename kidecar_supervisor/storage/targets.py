"""Writing a probe's value into a target object (e.g. the GameServer's spec.opsState).

The target is group/version/resource/namespace/name, each templated with
``${SELF:VAR}``/``${POD:VAR}``; without a configured target it is the pod's
own GameServer (OpenKruise Game names it like the pod, in the pod's
namespace). The field is ``jsonPath`` (an RFC 6901 pointer), by default
``/spec/opsState``.

At first use the resource is checked against API discovery, so a typo in
group/version/resource is one clear error quoting the API server instead of
a 404 that looks like a missing object. A pointer made of map keys is written
as a merge patch (creates missing parents, replaces existing members, removes
absent keys without failing, coalesces); one that walks into a list is
written as a JSON patch computed against the object as read, guarded by a
``test`` of its resourceVersion.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kidecar_supervisor.storage.base import StorageConfig, TargetRef
from kidecar_supervisor.storage.coalesce import Coalescer
from kidecar_supervisor.storage.kube_api import (
    KubeClient,
    KubeConflict,
    KubeError,
    KubeInvalid,
    KubeNotFound,
    ResourcePath,
)
from kidecar_supervisor.storage.patches import (
    json_patch_ops,
    parse_pointer,
    pointer_merge_patch,
    walks_into_list,
)
from kidecar_supervisor.storage.templating import PodEnv, render

GAMESERVER = ("game.kruise.io", "v1alpha1", "gameservers")
OPS_STATE_POINTER = "/spec/opsState"
_CONFLICT_RETRIES = 5


class TargetError(KubeError):
    """The configured target cannot be used (unknown resource, bad template, bad pointer)."""


@dataclass(frozen=True)
class ResolvedTarget:
    path: ResourcePath
    pointer: str


class TargetWriter:
    """Resolves and patches targets; thread-safe."""

    def __init__(self, client: KubeClient, coalescer: Coalescer, pod_name: str,
                 pod_namespace: str, self_env: Callable[[], Mapping[str, str]],
                 pod_env: Callable[[], PodEnv]) -> None:
        self.client = client
        self.coalescer = coalescer
        self.pod_name = pod_name
        self.pod_namespace = pod_namespace
        self.self_env = self_env
        self.pod_env = pod_env
        self._lock = threading.Lock()
        self._owner: TargetRef | None = None

    def resolve(self, cfg: StorageConfig) -> ResolvedTarget:
        """The object and pointer ``cfg`` targets, rendered and checked against discovery."""
        ref = cfg.target or TargetRef(*GAMESERVER, name=self.pod_name,
                                      namespace=self.pod_namespace)
        if ref.pod_owner:
            ref = self._pod_owner()
        pointer = cfg.json_path or OPS_STATE_POINTER
        try:
            parse_pointer(pointer)
            env = self.self_env()
            fields = [render(v, env, self.pod_env) for v in
                      (ref.group, ref.version, ref.resource, ref.namespace, ref.name)]
        except ValueError as exc:
            raise TargetError(f"target {_describe(ref)}: {exc}") from exc
        group, version, resource, namespace, name = fields
        namespaced = self._check_resource(group, version, resource)
        if namespaced and not namespace:
            namespace = self.pod_namespace
        if not namespaced:
            namespace = ""
        if not name:
            raise TargetError(f"target {_describe(ref)}: the name renders empty")
        return ResolvedTarget(ResourcePath(group, version, resource, namespace, name), pointer)

    def _pod_owner(self) -> TargetRef:
        """``podOwner: true`` (the Go kidecar's): the pod's controlling ownerReference.

        Read from the pod once (a pod's controller does not change); its kind is
        turned into the resource name the usual way (lower case, plural ``s``:
        GameServerSet -> gameserversets) and checked against discovery by ``resolve``.
        """
        with self._lock:
            if self._owner is not None:
                return self._owner
        pod = self.client.get(ResourcePath("", "v1", "pods", self.pod_namespace, self.pod_name))
        owners = [o for o in (pod.get("metadata") or {}).get("ownerReferences") or []
                  if isinstance(o, dict) and o.get("controller")]
        if not owners:
            raise TargetError(f"target podOwner: pod {self.pod_namespace}/{self.pod_name} has "
                              "no controlling owner (ownerReferences with controller: true)")
        owner = owners[0]
        group, _, version = str(owner.get("apiVersion", "")).rpartition("/")
        ref = TargetRef(group=group, version=version, resource=_plural(str(owner.get("kind"))),
                        name=str(owner.get("name", "")), namespace=self.pod_namespace)
        with self._lock:
            self._owner = ref
        return ref

    def _check_resource(self, group: str, version: str, resource: str) -> bool:
        gv = f"{group}/{version}" if group else version
        try:
            served = self.client.resources(group, version)
        except KubeNotFound as exc:
            raise TargetError(f"target resource {resource!r}: the API server does not serve "
                              f"{gv} (API answer: {exc})") from exc
        if resource not in served:
            known = ", ".join(sorted(r for r in served if "/" not in r)) or "nothing"
            raise TargetError(f"target resource {resource!r} does not exist in {gv}; "
                              f"the API server serves: {known}")
        return served[resource]

    def write(self, cfg: StorageConfig, value: str | None) -> None:
        """Set (or remove, for None) the field; raises KubeError."""
        target = self.resolve(cfg)
        tokens = parse_pointer(target.pointer)
        if any(t == "-" or t.isdigit() for t in tokens):
            self._write_json_patch(target, value)
            return
        patch = pointer_merge_patch(target.pointer, value)
        self.coalescer.submit(target.path.url(), patch,
                              lambda p: self._merge(target.path, p))

    def _merge(self, path: ResourcePath, patch: dict[str, object]) -> None:
        try:
            self.client.merge_patch(path, patch, raw=True)
        except KubeNotFound as exc:
            raise KubeNotFound(f"target object {path.describe()} not found: {exc}",
                               404, exc.reason) from exc

    def _write_json_patch(self, target: ResolvedTarget, value: str | None,
                          current: dict[str, Any] | None = None) -> None:
        """JSON patch computed against ``current`` (read if None), guarded by its resourceVersion.

        A failed ``test`` is answered with 422 Invalid (or 409) and a message that
        does not say so; whether the object changed meanwhile tells: if it did, read
        again and retry (bounded), if it did not, the patch itself was refused.
        """
        for _ in range(_CONFLICT_RETRIES):
            if current is None:
                current = self.client.get(target.path)
            assert current is not None
            if not walks_into_list(current, target.pointer):
                self.coalescer.submit(target.path.url(),
                                      pointer_merge_patch(target.pointer, value),
                                      lambda p: self._merge(target.path, p))
                return
            try:
                ops = json_patch_ops(current, target.pointer, value)
            except ValueError as exc:
                raise TargetError(f"{target.path.describe()} {target.pointer}: {exc}") from exc
            if not ops:
                return
            seen = current["metadata"]["resourceVersion"]
            guard = {"op": "test", "path": "/metadata/resourceVersion", "value": seen}
            try:
                self.client.json_patch(target.path, [guard, *ops], raw=True)
                return
            except (KubeConflict, KubeInvalid) as exc:
                current = self.client.get(target.path)
                if current is not None and current["metadata"]["resourceVersion"] == seen:
                    raise exc  # the guard held: the API refused the patch itself
        raise KubeConflict(f"patch {target.path.describe()}: the object kept changing", 409)


def _plural(kind: str) -> str:
    """A kind's resource name as Kubernetes derives it for ordinary kinds."""
    lower = kind.lower()
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        return lower[:-1] + "ies"
    return lower + "s"


def _describe(ref: TargetRef) -> str:
    gv = f"{ref.group}/{ref.version}" if ref.group else ref.version
    return f"{gv} {ref.resource} {ref.namespace}/{ref.name}"
