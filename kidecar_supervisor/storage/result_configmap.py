"""Writing and reading the result ConfigMap without losing anyone's entry.

Every pod writes its own pod key (see ``result_codec``) with a JSON merge
patch, so 200 pods writing at once never overwrite each other: the API
server applies each patch to the current object, no read-modify-write.
Writes of one sidecar to the ConfigMap coalesce (``Coalescer``).

The workload key is shared by every pod of the workload and must never move
backwards (a delayed v2 must not replace another pod's v3), so a successful
result of a version the entry does not already name advances it with a
compare-and-swap: the merge patch's answer shows
the current entry; only if ours is newer is it replaced by a JSON patch whose
``test`` op checks the entry is still the one we compared against (on a
failed test the API answers 422 or 409: read again, compare again, bounded).
A key nobody wrote yet is added under a resourceVersion ``test`` instead.

Pruning (the data grew past ``PRUNE_ABOVE``) drops the oldest pod entries
and strips ``managedFields``, which list every key again and would otherwise
push the stored object past etcd's request limit; it uses a resourceVersion
precondition.

A missing ConfigMap is created; a create that races another pod's (409)
falls back to the patch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
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
from kidecar_supervisor.storage.patches import JsonObj, escape_token
from kidecar_supervisor.storage.workload import Workload

log = logging.getLogger("kidecar.storage.configmap")

_CONFLICT_RETRIES = 8
#: a prune goes this far below PRUNE_TO: the workload entry swapped in right after
#: the pod-key write (whose answer triggered the prune) must still fit under it
PRUNE_ROOM = 4096


def _swap_ops(current: dict[str, Any], wk: str, old: str | None,
              new: str) -> list[JsonObj]:
    """JSON patch: set ``wk`` to ``new`` only if it still holds ``old`` (absent: same object)."""
    pointer = f"/data/{escape_token(wk)}"
    if old is not None:
        return [{"op": "test", "path": pointer, "value": old},
                {"op": "replace", "path": pointer, "value": new}]
    guard = {"op": "test", "path": "/metadata/resourceVersion",
             "value": current["metadata"]["resourceVersion"]}
    if current.get("data") is None:
        return [guard, {"op": "add", "path": "/data", "value": {wk: new}}]
    return [guard, {"op": "add", "path": pointer, "value": new}]


def _guard_holds(fresh: dict[str, Any], compared: dict[str, Any], wk: str,
                 old: str | None) -> bool:
    """Whether the ``test`` of ``_swap_ops`` would still pass, i.e. it did not fail it."""
    if old is not None:
        return (fresh.get("data") or {}).get(wk) == old
    rv: str = fresh["metadata"]["resourceVersion"]
    return rv == compared["metadata"]["resourceVersion"]


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
    def put(self, path: ResourcePath, data: dict[str, str],
            strip_managed_fields: bool = False,
            on_create: dict[str, str] | None = None) -> dict[str, Any] | None:
        """Merge ``data`` into the ConfigMap at ``path`` (created if missing; coalesced).

        Returns the ConfigMap as the API answered (the patch's or the create's). No
        pruning: a shard holds a few entries (``result_shards``). ``on_create``:
        keys only a create adds too (a shard's first workload record: saves the
        swap after it); a patch of an existing object leaves them to the caller.
        """
        def send(patch: JsonObj) -> dict[str, Any] | None:
            raw = self._patch_or_create(path, patch, on_create)
            return None if raw is None else dict(json.loads(raw))

        patch: JsonObj = {"data": data}
        if strip_managed_fields:
            patch["metadata"] = {"managedFields": [{}]}
        answer: dict[str, Any] | None = self.coalescer.submit(path.url(), patch, send)
        return answer

    def advance_key(self, path: ResourcePath, key: str, make: Callable[[str | None], str],
                    newer: Callable[[str | None], bool],
                    current: dict[str, Any] | None) -> dict[str, Any] | None:
        """Compare-and-swap ``key``: set to ``make(old)`` only while ``newer(old)``.

        ``current`` is the object as last seen (None: read it). The JSON patch's
        ``test`` op checks the value compared against; if someone else wrote
        first the API refuses it (422/409) and the object is read and compared
        again (bounded). Returns the object after our swap (None if none was
        made), which the caller may keep as its next ``current``.
        """
        for _ in range(_CONFLICT_RETRIES):
            if current is None:
                try:
                    current = self.client.get(path)
                except KubeNotFound:  # not there yet: create it with our entry
                    raw = self._patch_or_create(path, {"data": {key: make(None)}})
                    return None if raw is None else dict(json.loads(raw))
            assert current is not None
            old = (current.get("data") or {}).get(key)
            if not newer(old):
                return None
            try:
                raw = self.client.json_patch(path, _swap_ops(current, key, old, make(old)),
                                             raw=True)
                return dict(json.loads(raw))
            except KubeNotFound:  # deleted since ``current`` was seen: read (and create)
                current = None
            except (KubeConflict, KubeInvalid) as exc:
                fresh = self._get_or_none(path)
                if fresh is not None and _guard_holds(fresh, current, key, old):
                    raise exc
                current = fresh
        raise KubeUnavailable(f"patch {path.describe()} key {key}: still conflicting after "
                              f"{_CONFLICT_RETRIES} tries", 409)

    def write(self, name: str, namespace: str, pod_namespace: str, workload: Workload,
              record: ResultRecord) -> None:
        """Record ``record`` under the pod's key and, if successful, the workload's key."""
        pk = codec.pod_key(record.plugin, pod_namespace, record.pod)
        wk = codec.workload_key(record.plugin, pod_namespace, workload)
        path = self.path(name, namespace)
        keep = frozenset({pk, wk} if record.success else {pk})
        answer = self.coalescer.submit(
            path.url(), {"data": {pk: codec.pod_entry(record)}},
            lambda patch: self._send(path, patch, keep))
        if record.success:
            self._advance_workload(path, wk, record, answer)

    def _send(self, path: ResourcePath, patch: JsonObj,
              keep: frozenset[str]) -> dict[str, Any] | None:
        """Merge-patch (creating the ConfigMap if needed); prune when it grew too big.

        Returns the ConfigMap as the API answered (None after a create).
        """
        try:
            raw = self._patch_or_create(path, patch)
        except (KubeInvalid, KubeUnavailable) as exc:
            if not _too_big(exc):
                raise
            log.warning("result ConfigMap %s is full (%s); pruning old pod entries",
                        path.describe(), exc)
            self.prune(path, keep, force=True)
            raw = self._patch_or_create(path, patch)
        if raw is None:
            return None
        current: dict[str, Any] = json.loads(raw)
        if len(raw) > codec.PRUNE_ABOVE:
            self._prune_after_write(path, current, keep)
        return current

    def _prune_after_write(self, path: ResourcePath, current: dict[str, Any],
                           keep: frozenset[str]) -> None:
        """Prune as of the write's answer; a conflict is not the write's failure.

        The write itself succeeded. If another pod changed the ConfigMap since,
        the precondition fails (409): that pod's write answer shows the size
        too, so it (or the next writer) prunes.
        """
        try:
            self._prune_from(path, current, keep, force=False)
        except KubeConflict as exc:
            log.info("prune of %s skipped, it changed meanwhile (%s); the next writer "
                     "prunes", path.describe(), exc)

    def _patch_or_create(self, path: ResourcePath, patch: JsonObj,
                         on_create: dict[str, str] | None = None) -> bytes | None:
        try:
            result: bytes = self.client.merge_patch(path, patch, raw=True)
            return result
        except KubeNotFound:
            pass
        data = dict(on_create or {})
        data.update({k: v for k, v in (patch.get("data") or {}).items() if v is not None})
        body = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": path.name, "namespace": path.namespace}, "data": data}
        try:  # the create's answer is the object as created: no read needed after it
            created: bytes = self.client.create(
                ResourcePath("", "v1", "configmaps", path.namespace), body, raw=True)
            return created
        except KubeConflict:  # another pod created it first: patch that one
            result = self.client.merge_patch(path, patch, raw=True)
            return result

    def _advance_workload(self, path: ResourcePath, wk: str, record: ResultRecord,
                          current: dict[str, Any] | None) -> None:
        """Compare-and-swap the workload entry: replaced only by a newer result."""
        new = codec.workload_entry(record)
        for _ in range(_CONFLICT_RETRIES):
            if current is None:
                try:
                    current = self.client.get(path)
                except KubeNotFound:  # deleted meanwhile: create it with our entry
                    self._patch_or_create(path, {"data": {wk: new}})
                    return
            assert current is not None
            old = (current.get("data") or {}).get(wk)
            known = codec.parse_workload_entry(old, record.plugin, "")
            if known is not None and known.timestamp >= record.timestamp:
                if known.timestamp > record.timestamp:
                    log.info("result %s of %s is older than the workload entry (%s); "
                             "workload entry kept", record.version, record.pod, known.version)
                return
            if known is not None and (known.version, known.url, known.sha256) == (
                    record.version, record.url, record.sha256):
                # another pod already recorded this very version: the entry says what a
                # new pod needs; rolling a fleet out costs no second write per pod
                return
            try:
                self.client.json_patch(path, _swap_ops(current, wk, old, new), raw=True)
                return
            except (KubeConflict, KubeInvalid) as exc:
                # a failed ``test`` (someone else wrote first) answers 422/409; anything
                # else leaves the object as it was, so a second try fails the same way
                fresh = self._get_or_none(path)
                if fresh is not None and _guard_holds(fresh, current, wk, old):
                    raise exc
                current = fresh
        raise KubeUnavailable(f"patch {path.describe()} key {wk}: still conflicting after "
                              f"{_CONFLICT_RETRIES} tries", 409)

    def _get_or_none(self, path: ResourcePath) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.client.get(path)
            return found
        except KubeNotFound:
            return None

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
        dropped = codec.prune_keys(data, above=above, to=codec.PRUNE_TO - PRUNE_ROOM, keep=keep)
        if not dropped and not force:
            return []
        patch = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"],
                              "managedFields": [{}]},
                 "data": dict.fromkeys(dropped)}
        self.client.merge_patch(path, patch, raw=True)
        log.info("pruned %d old pod entries from %s (%d → ≤%d bytes)", len(dropped),
                 path.describe(), codec.data_size(data), codec.PRUNE_TO - PRUNE_ROOM)
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
