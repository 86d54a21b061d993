"""InKube result store: the pod's annotations/labels, a result ConfigMap, Events.

What goes where (encoding in ``result_codec``):

* ``record_result``: pod annotation ``annotationKey`` (JSON: version,
  success, url, time, message, and ``lastGood`` after a failure) plus labels
  ``labelKey``/``labelKey-success`` if configured, one merge patch; the pod's
  shard of the result ConfigMap (``result_shards``: ``<resultConfigMap>-<nnnn>``,
  default namespace ``kube-system``) gets this pod's entry, one merge patch,
  and on success the workload record when it is behind (rare); an Event
  HotUpdateSucceeded/HotUpdateFailed on the pod. That is 3 API requests per
  result (the pod is read once per sidecar, then kept current from the PATCH
  answers). Events are best effort: a 403 on Events turns them off for the
  process with one warning (``events_off``), nothing about them is journaled.
* ``apply_markers``: labels/annotations (None removes) in one merge patch of
  the pod, and ``target_value`` into the target (``targets``).
* ``latest_for_pod``: the pod annotation (survives container restarts; the Go
  kidecar's ``"v2: Update success"`` too), the pod's shard entry (a pod
  recreated with the same name), the old single-ConfigMap layout and the Go
  kidecar's keys (``legacy_records``), or what this sidecar recorded locally
  if that is newer or the API is down.
* ``latest_for_workload``: the workload record in its shard, else the old
  layout's; the key includes the namespace, kind and name of the workload, so
  another workload's result is never returned.

Durability: every write is first appended to the write-ahead journal under
``<state_dir>/kube-journal`` (fsynced, *held* so the replayer leaves it
alone), then goes straight to the API (bounded retries) and is deleted when
written; a crash during that attempt leaves it to be replayed. If the API
cannot be reached (or refuses with 401/403, fixable by RBAC) the entry keeps
the remaining parts, is released to the replayer and the call returns
JOURNALED.
Order is kept per object: a new write queues behind the journal if a pending
entry writes one of its objects (the pod, the result ConfigMap, the target,
the Events), or while the API does not answer at all; otherwise
it goes straight to the API, so one stuck write (a 403 on the ConfigMap) does
not hold up the pod's markers. The replayer works the same way.
A background thread replays it with backoff, as soon as the API answers
again and at the next start (a new InKubeStore on the same state_dir).
Errors the API will never accept (404 pod, 422 invalid label key, unknown
target resource) are raised to the caller with the API's answer; nothing is
silently dropped (unwritable journal entries are kept under ``failed/``). A
401/403 is retried while RBAC may still be fixed, for ``FORBIDDEN_GIVE_UP``
seconds from the first refusal of that part, then kept under ``failed/`` too:
a permission missing for an hour never grows the journal. The journal is
bounded (``JournalLimits``) and handed over between the two instances of a
hot upgrade (``Journal(exclusive=True)``; a standby instance takes over when
the older one stops or dies).

Every InKubeStore of one sidecar (one per storage config) shares one
backend per state_dir: one client, one pod cache, one journal, one replay
thread, and one coalescer, so writes to the same object coalesce across
plugins.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kidecar_supervisor.plugin_kit.durable_files import atomic_write_json
from kidecar_supervisor.pod_identity import PodIdentity
from kidecar_supervisor.storage import result_codec as codec
from kidecar_supervisor.storage.base import (
    DEFAULT_RESULT_CONFIGMAP,
    DEFAULT_RESULT_NAMESPACE,
    JOURNALED,
    WRITTEN,
    MarkerUpdate,
    ResultRecord,
    ResultStore,
    StorageConfig,
    TargetRef,
    partial_outcome,
)
from kidecar_supervisor.storage.coalesce import Coalescer
from kidecar_supervisor.storage.journal import Entry, Journal, JournalLimits
from kidecar_supervisor.storage.kube_api import (
    KubeClient,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeUnavailable,
    ResourcePath,
    RetryPolicy,
)
from kidecar_supervisor.storage.kube_events import EventRecorder
from kidecar_supervisor.storage.legacy_records import (
    LegacyRecords,
    configmap_data,
    go_annotation_version,
)
from kidecar_supervisor.storage.result_configmap import ResultConfigMap
from kidecar_supervisor.storage.result_shards import ShardedResults, good_from_pod_value, url_of
from kidecar_supervisor.storage.targets import TargetWriter
from kidecar_supervisor.storage.templating import first_container_env
from kidecar_supervisor.storage.workload import Workload, workload_of

log = logging.getLogger("kidecar.storage.inkube")

JOURNAL_DIR = "kube-journal"
LATEST_FILE = "inkube-latest.json"
#: the replayer retries one request at a time; its own loop does the backing off
REPLAY_RETRY = RetryPolicy(attempts=2, base=0.2, cap=1.0, deadline=5.0)
REPLAY_BACKOFF_MAX = 5.0
DIRECT_RETRY = RetryPolicy(attempts=4, base=0.2, cap=2.0, deadline=8.0)
#: a part refused with 401/403 this long (from its first refusal) goes to failed/
FORBIDDEN_GIVE_UP = 600.0
#: Events off after a 403 are tried again this long after the first refusal, the
#: wait doubling with each refusal in a row up to ``EVENTS_RETRY_AFTER``: an API
#: server whose authorizer is still warming up after a restart answers 403 for a
#: few seconds, a missing RBAC rule answers it for good (or until it is fixed)
EVENTS_FIRST_RETRY = 10.0
EVENTS_RETRY_AFTER = 600.0
#: how often a standby journal (hot upgrade) tries to take over the main one
HANDOVER_POLL = 0.5


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.replace("-", "_").split("_") if p)


def result_reason(record: ResultRecord) -> str:
    """``HotUpdateSucceeded`` / ``HotUpdateFailed`` for plugin hot_update."""
    return f"{_camel(record.plugin)}{'Succeeded' if record.success else 'Failed'}"


def _cfg_to_dict(cfg: StorageConfig) -> dict[str, Any]:
    return {
        "annotation_key": cfg.annotation_key, "label_key": cfg.label_key,
        "result_configmap": cfg.result_configmap, "result_namespace": cfg.result_namespace,
        "target": dataclasses.asdict(cfg.target) if cfg.target else None,
        "json_path": cfg.json_path,
    }


def _cfg_from_dict(data: Mapping[str, Any]) -> StorageConfig:
    target = data.get("target")
    return StorageConfig(
        type="InKube", annotation_key=data.get("annotation_key", ""),
        label_key=data.get("label_key", ""),
        result_configmap=data.get("result_configmap") or DEFAULT_RESULT_CONFIGMAP,
        result_namespace=data.get("result_namespace") or DEFAULT_RESULT_NAMESPACE,
        target=TargetRef(**target) if target else None, json_path=data.get("json_path", ""),
    )


def _merge_markers(last: Entry, new: Entry) -> Entry | None:
    """Fold consecutive, untouched marker updates of one config: latest value wins."""
    if not (last.get("op") == new.get("op") == "markers" and last.get("cfg") == new.get("cfg")
            and last.get("parts") == new.get("parts") == ["pod", "target"]):
        return None
    merged = dict(last)
    merged["labels"] = {**last.get("labels", {}), **new.get("labels", {})}
    merged["annotations"] = {**last.get("annotations", {}), **new.get("annotations", {})}
    if new.get("target_value") is not None:
        merged["target_value"] = new["target_value"]
    return merged


#: parts of an operation the API refused for good, with its answers
Refused = list[tuple[str, KubeError]]
#: the parts of a result entry, by the names a caller sees (base.RESULT_PARTS)
_RESULT_PART_NAMES = {"pod": "pod", "configmap": "store", "event": "event"}


class _PartFailed(Exception):
    """A part of an operation failed: ``error`` says why, the entry holds what is left.

    ``refused``: parts before it that the API refused for good (kept under failed/).
    """

    def __init__(self, error: KubeError, refused: Refused) -> None:
        super().__init__(str(error))
        self.error = error
        self.refused = refused


class _Backend:
    """Everything one sidecar (one state_dir) shares between its stores."""

    def __init__(self, identity: PodIdentity, state_dir: Path, client: KubeClient,
                 self_env: Callable[[], Mapping[str, str]],
                 limits: JournalLimits | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if not identity.in_cluster:
            raise KubeError("InKube storage needs the pod's name and namespace: set POD_NAME "
                            "and POD_NAMESPACE from the downward API")
        self.identity = identity
        self.state_dir = state_dir
        self.client = client
        self.self_env = self_env
        self.refs = 0
        self.coalescer = Coalescer()
        self.clock = clock
        self.journal = Journal(state_dir / JOURNAL_DIR, limits, exclusive=True, clock=clock)
        self.journal.on_adopt = self._adopted
        #: why Events are off for this process (a 403 on Events), or None
        self.events_off: str | None = None
        self._events_off_since = 0.0
        #: how long Events stay off after the latest 403 (grows while they are refused)
        self._events_retry_after = EVENTS_FIRST_RETRY
        self.forbidden_given_up = 0
        self._journaled_causes: set[tuple[str, int, tuple[str, ...]]] = set()
        self.latest_path = state_dir / LATEST_FILE
        self.latest_lock = threading.Lock()  # one file for every store of the sidecar
        self.pod_path = ResourcePath("", "v1", "pods", identity.namespace, identity.pod_name)
        self.configmaps = ResultConfigMap(client, self.coalescer)
        self.shards = ShardedResults(client, self.coalescer)
        self._legacy: dict[tuple[str, str], LegacyRecords] = {}
        self.events = EventRecorder(client, identity.namespace, self._involved,
                                    identity.node_name)
        self.targets = TargetWriter(client, self.coalescer, identity.pod_name,
                                    identity.namespace, self_env,
                                    lambda: first_container_env(self.pod()))
        self._lock = threading.Lock()
        self._pod: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        #: the last attempt got no answer (or 429/5xx): queue everything, don't wait on it
        self._api_down = False
        client.on_answer(self._answered)
        client.forbidden_quiet.add("events")  # _events_forbidden says it once
        self._handover: threading.Thread | None = None
        if not self.journal.owner:
            self._handover = threading.Thread(target=self._await_handover, daemon=True,
                                              name="kidecar-journal-handover")
            self._handover.start()
        if len(self.journal):
            log.info("replaying %d journaled Kubernetes writes", len(self.journal))
            self._ensure_replayer()

    def _await_handover(self) -> None:
        """Standby (hot upgrade): take the older instance's journal once it lets go."""
        while not self._stop.is_set():
            try:
                if self.journal.try_take_over():
                    return
            except Exception:  # noqa: BLE001 - keep trying; the entries stay on disk
                log.exception("journal take-over failed; retrying")
            self._stop.wait(HANDOVER_POLL)

    def _adopted(self) -> None:
        self._wake.set()
        self._ensure_replayer()

    def stats(self) -> dict[str, Any]:
        """Journal numbers and whether Events are on, for /metrics."""
        return {**self.journal.stats(), "eventsOff": self.events_off is not None,
                "forbiddenGivenUp": self.forbidden_given_up}

    def _answered(self) -> None:
        self._api_down = False
        self._wake.set()

    def _failed(self, error: KubeError) -> None:
        if isinstance(error, KubeUnavailable):
            self._api_down = True

    # -- the pod -----------------------------------------------------------------
    def pod(self, refresh: bool = False, retry: RetryPolicy | None = None) -> dict[str, Any]:
        """The pod object, read once and then kept current from our PATCH answers."""
        with self._lock:
            cached = self._pod
        if cached is not None and not refresh:
            return cached
        pod: dict[str, Any] = self.client.get(self.pod_path, retry=retry)
        with self._lock:
            self._pod = pod
        return pod

    def patch_pod(self, patch: dict[str, Any], retry: RetryPolicy) -> None:
        """Merge-patch the pod (coalesced with concurrent patches); refresh the cache."""

        def send(p: dict[str, Any]) -> None:
            answer = self.client.merge_patch(self.pod_path, p, retry=retry)
            with self._lock:
                self._pod = answer

        self.coalescer.submit(self.pod_path.url(), patch, send)

    def _involved(self) -> dict[str, Any]:
        meta = self.pod().get("metadata", {})
        return {"apiVersion": "v1", "kind": "Pod", "name": self.identity.pod_name,
                "namespace": self.identity.namespace, "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", "")}

    def workload(self, retry: RetryPolicy | None = None) -> Workload:
        return workload_of(self.pod(retry=retry))

    def legacy(self, cfg: StorageConfig) -> LegacyRecords:
        """The single result ConfigMap of older writers, read once (never written)."""
        key = (cfg.result_namespace, cfg.result_configmap)
        with self._lock:
            cached = self._legacy.get(key)
        if cached is not None:
            return cached
        try:
            obj = self.client.get(ResultConfigMap.path(cfg.result_configmap,
                                                       cfg.result_namespace))
        except KubeNotFound:
            obj = None
        except KubeForbidden as exc:  # an RBAC without it: older records are a bonus
            log.warning("older results (ConfigMap %s/%s) not readable, not used for "
                        "recovery: %s", cfg.result_namespace, cfg.result_configmap, exc)
            obj = None
        found = LegacyRecords(configmap_data(obj), self.identity.namespace)
        with self._lock:
            self._legacy[key] = found
        return found

    # -- operations --------------------------------------------------------------
    def run(self, entry: Entry, retry: RetryPolicy, blocked: set[str] | None = None) -> Refused:
        """Do what is left of ``entry`` (its ``parts`` shrink as they are written).

        Order is kept per object: a part whose object is in ``blocked`` (an
        earlier write of it is waiting) waits too, and a part that fails
        retriably adds its object, while the other parts go on. If the API
        does not answer at all, everything stops at once. Raises _PartFailed if
        any part is left (the entry holds those); returns the parts that were
        given up, with the API's answers.
        """
        blocked = set() if blocked is None else blocked
        refused: Refused = []
        error: KubeError | None = None
        for part in list(entry["parts"]):
            obj = _part_object(entry, part)
            if obj in blocked:
                continue
            try:
                if not (obj == "event" and self._events_are_off()):
                    self._run_part(entry, part, retry)
                    if obj == "event" and self.events_off:
                        self.events_off = None
                        self._events_retry_after = EVENTS_FIRST_RETRY
                        log.info("Events are on again: the ServiceAccount may create them")
            except KubeForbidden as exc:
                if obj == "event" and exc.status == 403:
                    self._events_forbidden(exc)
                elif not self._forbidden_too_long(entry, part):
                    error = exc
                    blocked.add(obj)
                    continue
                else:
                    refused.append((part, exc))
            except KubeError as exc:
                if exc.retriable:
                    error = exc
                    blocked.add(obj)
                    if isinstance(exc, KubeUnavailable):
                        break
                    continue
                refused.append((part, exc))
            entry["parts"].remove(part)
            entry.get("forbidden", {}).pop(part, None)
        if entry["parts"]:
            raise _PartFailed(error or KubeError("waiting behind an earlier write of the "
                                                 "same object"), refused)
        return refused

    def events_suppressed(self) -> bool:
        """Whether Events are off now (refused with 403, the retry wait not over)."""
        return (self.events_off is not None
                and time.monotonic() - self._events_off_since < self._events_retry_after)

    def _events_are_off(self) -> bool:
        """Off after a 403; one Event is tried again after 10 s, 20 s, ... up to 10 min."""
        if self.events_off is None:
            return False
        if self.events_suppressed():
            return True
        self._events_off_since = time.monotonic()  # this one is the probe
        return False

    def _events_forbidden(self, exc: KubeForbidden) -> None:
        """Events are best effort: the first 403 turns them off, with one warning."""
        self._events_off_since = time.monotonic()
        if self.events_off is not None:
            self._events_retry_after = min(self._events_retry_after * 2, EVENTS_RETRY_AFTER)
            return
        self.events_off = str(exc)
        log.warning("Events are off for this sidecar process: its ServiceAccount may not "
                    "create events in namespace %r (missing RBAC rule: apiGroups [\"\"], "
                    "resources [events], verbs [create, patch]; see config/rbac.yaml). "
                    "Hot updates, recovery and markers go on; no Event is journaled. "
                    "API said: %s", self.identity.namespace, exc)

    def _forbidden_too_long(self, entry: Entry, part: str) -> bool:
        """Whether ``part`` has been refused with 401/403 for ``FORBIDDEN_GIVE_UP`` seconds.

        Counted from when the write was made (``since``; else its first refusal,
        kept in the entry so it survives restarts): writes queued behind a refused
        one are as old as they are, so once the permission is missing for longer
        than that, every pass gives up all that are past it and the journal holds
        at most ``FORBIDDEN_GIVE_UP`` seconds of writes. Until then a fixed RBAC
        still gets them through.
        """
        since = entry.setdefault("forbidden", {}).setdefault(
            part, entry.get("since") or self.clock())
        if self.clock() - float(since) < FORBIDDEN_GIVE_UP:
            return False
        self.forbidden_given_up += 1
        return True

    def _blocked(self) -> set[str] | None:
        """Objects with a journaled write still waiting; None: the API is down, queue all."""
        if not self.journal.pending():
            return set()
        if self._api_down:
            return None
        return {_part_object(e, part) for _, e in self.journal.entries() for part in e["parts"]}

    def _keep_refused(self, entry_id: int, entry: Entry, refused: Refused) -> None:
        """Keep the refused parts under failed/ (with an error log); the rest stays queued."""
        if refused:
            self.journal.keep_failed(entry_id, {**entry, "parts": [p for p, _ in refused]},
                                     _reasons(refused), _cause(refused))

    def _fail_refused(self, entry_id: int, entry: Entry, refused: Refused) -> None:
        """Nothing of the entry is left but refused parts: move it to failed/."""
        self.journal.update(entry_id, {**entry, "parts": [p for p, _ in refused]})
        self.journal.fail(entry_id, _reasons(refused), _cause(refused))

    def _run_part(self, entry: Entry, part: str, retry: RetryPolicy) -> None:
        op = entry["op"]
        if op == "result":
            self._result_part(_cfg_from_dict(entry["cfg"]), ResultRecord.from_dict(entry["record"]),
                              part, retry)
        elif op == "markers":
            self._markers_part(_cfg_from_dict(entry["cfg"]), entry, part, retry)
        elif op == "event":
            self.events.emit(entry["reason"], entry["message"], entry["warning"], entry["time"])
        else:
            raise KubeError(f"unknown journal operation {op!r}")

    def _result_part(self, cfg: StorageConfig, record: ResultRecord, part: str,
                     retry: RetryPolicy) -> None:
        record.pod = self.identity.pod_name
        record.workload = str(self.workload(retry))
        if part in ("pod", "configmap") and self._superseded(cfg, record, retry):
            log.info("result %s of %s is older than the one on the pod; its pod annotation "
                     "and pod entry are not written again", record.version, record.plugin)
            if part == "configmap" and record.success:  # the workload may still need it
                self.shards.write(cfg.result_configmap, cfg.result_namespace,
                                  self.identity.namespace, Workload.parse(record.workload),
                                  record, None, pod_entry=False)
            return
        if part == "pod":
            key = cfg.annotation_key or codec.DEFAULT_ANNOTATION_KEY
            previous = (self.pod(retry=retry).get("metadata", {}).get("annotations") or {}).get(key)
            meta: dict[str, Any] = {"annotations": {key: codec.annotation_value(record, previous)}}
            labels = codec.result_labels(cfg.label_key, record)
            if labels:
                meta["labels"] = labels
            self.patch_pod({"metadata": meta}, retry)
        elif part == "configmap":
            key = cfg.annotation_key or codec.DEFAULT_ANNOTATION_KEY
            annotation = (self.pod(retry=retry).get("metadata", {}).get("annotations")
                          or {}).get(key)
            last_good = None if record.success else codec.last_good_from_annotation(
                annotation, record.plugin)
            if last_good is not None and last_good.version == record.version \
                    and last_good.timestamp >= record.timestamp:
                last_good = None  # the pod part already wrote this very failure
            self.shards.write(cfg.result_configmap, cfg.result_namespace,
                              self.identity.namespace, Workload.parse(record.workload),
                              record, last_good)
        elif part == "event":
            text = f"{record.plugin} {record.version} " + (
                "applied" if record.success else "failed") + (
                f": {record.message}" if record.message else "") + (
                f" ({record.url})" if record.url else "")
            self.events.emit(result_reason(record), text, not record.success, record.timestamp)

    def _superseded(self, cfg: StorageConfig, record: ResultRecord, retry: RetryPolicy) -> bool:
        """Whether the pod's annotation already holds a *newer* result of this plugin.

        A replayed result (e.g. adopted from the older instance of a hot upgrade
        after the newer one recorded its own) must not move the pod back.
        """
        key = cfg.annotation_key or codec.DEFAULT_ANNOTATION_KEY
        text = (self.pod(retry=retry).get("metadata", {}).get("annotations") or {}).get(key)
        try:
            current = json.loads(text or "")
        except ValueError:
            return False
        return (isinstance(current, dict) and current.get("plugin") == record.plugin
                and float(current.get("timestamp") or 0) > record.timestamp)

    def _markers_part(self, cfg: StorageConfig, entry: Entry, part: str,
                      retry: RetryPolicy) -> None:
        if part == "pod":
            labels = {k: (None if v is None else codec.sanitize_label_value(v))
                      for k, v in entry.get("labels", {}).items()}
            meta: dict[str, Any] = {}
            if labels:
                meta["labels"] = labels
            if entry.get("annotations"):
                meta["annotations"] = dict(entry["annotations"])
            if meta:
                self.patch_pod({"metadata": meta}, retry)
        elif part == "target" and entry.get("target_value") is not None:
            self.targets.write(cfg, entry["target_value"])

    # -- submitting: straight to the API, or behind the journal --------------------
    def submit(self, entry: Entry, merge: bool = False) -> str:
        """WRITTEN if done now; JOURNALED if queued on disk. Raises on permanent errors."""
        outcome, refused, _ = self._submit(entry, merge)
        if refused and outcome == WRITTEN:
            raise refused[0][1]
        return outcome

    def submit_result(self, entry: Entry) -> str:
        """``submit`` for a result: a part refused for good does not hide the parts that
        were recorded (e.g. the ConfigMap is full but the pod annotation was written).

        Returns WRITTEN/JOURNALED when no part was refused, a ``partial_outcome``
        naming each part when some were; raises only if every part was refused.
        """
        parts = list(entry["parts"])
        outcome, refused, left = self._submit(entry)
        off = self.events_off
        if not refused and not (off and "event" in parts and "event" not in left):
            return outcome
        if refused and len(refused) == len(parts):
            raise refused[0][1]
        answers = {part: f"refused: {error}" for part, error in refused}
        if off and "event" not in answers:
            answers["event"] = "off: Events are not permitted (best effort, turned off)"
        return partial_outcome({_RESULT_PART_NAMES[part]: answers.get(
            part, JOURNALED if part in left else WRITTEN) for part in parts})

    def _submit(self, entry: Entry, merge: bool = False) -> tuple[str, Refused, list[str]]:
        """(WRITTEN or JOURNALED, the parts refused for good, the parts left journaled).

        A direct write is journaled (held, fsynced) *before* it talks to the API:
        the attempt may block for many seconds, and a crash meanwhile must leave
        the write to be replayed at the next start, not lose it.
        """
        blocked = self._blocked()
        if blocked is None or all(_part_object(entry, p) in blocked for p in entry["parts"]):
            self.journal.append(entry, _merge_markers if merge else None)
            self._ensure_replayer()
            return JOURNALED, [], list(entry["parts"])
        entry_id = self.journal.append(entry, hold=True)  # OSError: nothing promised
        try:
            permanent = self.run(entry, DIRECT_RETRY, blocked)
        except _PartFailed as failed:
            self._leave_for_replay(entry_id, entry, failed)
            self._log_journaled(entry, failed.error)
            self._ensure_replayer()
            return JOURNALED, failed.refused, list(entry["parts"])
        except Exception as exc:
            self.journal.fail(entry_id, f"{type(exc).__name__}: {exc}")
            raise
        if permanent:
            self._fail_refused(entry_id, entry, permanent)
            return WRITTEN, permanent, []
        self.journal.done(entry_id)
        return WRITTEN, [], []

    def _log_journaled(self, entry: Entry, error: KubeError) -> None:
        """A warning the first time a cause (error kind + the objects waiting) journals a
        write; later ones at debug (a GameServer refused all day says so once)."""
        cause = (type(error).__name__, error.status,
                 tuple(sorted(_part_object(entry, p) for p in entry["parts"])))
        if type(error) is KubeError:  # queued behind an earlier write: that one was said
            log.debug("Kubernetes write journaled (%s); %d pending", error, len(self.journal))
            return
        with self._lock:
            first = cause not in self._journaled_causes
            self._journaled_causes.add(cause)
        (log.warning if first else log.debug)(
            "Kubernetes write journaled (%s); %d pending", error, len(self.journal))

    # -- replay ------------------------------------------------------------------
    def _ensure_replayer(self) -> None:
        with self._thread_lock:
            alive = self._thread is not None and self._thread.is_alive()
            if not alive and not self._stop.is_set():
                self._thread = threading.Thread(target=self._replay_loop, daemon=True,
                                                name="kidecar-kube-journal")
                self._thread.start()

    def _replay_loop(self) -> None:
        """Replay until the journal is empty; an unexpected error (a disk error) backs off."""
        delay = 0.0
        try:
            while not self._stop.is_set():
                if delay:
                    self._wake.clear()
                    self._wake.wait(delay)
                    if self._stop.is_set():
                        break
                try:
                    progressed = self._replay_step()
                except Exception:  # noqa: BLE001 - the replayer must outlive a bad disk
                    log.exception("journal replay failed; retrying")
                    progressed = False
                if progressed is None:
                    return
                if progressed:
                    delay = 0.0
                else:
                    delay = min(REPLAY_BACKOFF_MAX, max(0.25, delay * 2)) * random.uniform(0.8, 1.2)
        finally:
            with self._thread_lock:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _replay_step(self) -> bool | None:
        """One pass over the journal, oldest first: True if anything was written,
        False to back off, None when it is empty.

        Order is kept per object, not globally (``run``): a part waits only behind
        earlier writes of its object that could not be made, so one stuck write (a
        403 on the ConfigMap) does not hold up the pod's markers.
        """
        blocked: set[str] = set()
        progressed = False
        for entry_id, _ in self.journal.entries():
            if self._stop.is_set():
                return progressed
            claimed = self.journal.claim(entry_id)
            if claimed is None:
                continue
            left = len(claimed["parts"])
            try:
                done = self._replay_one(entry_id, claimed, blocked)
            except BaseException:
                self.journal.release(entry_id)
                raise
            progressed = progressed or done or len(claimed["parts"]) < left
            if not done and self._api_down:
                break  # no answer at all: the rest would wait the same
        if progressed:
            return True
        with self._thread_lock:  # decided under the lock a submit starts us with
            if self.journal.pending() == 0:
                if self._thread is threading.current_thread():
                    self._thread = None
                return None
        return False

    def _leave_for_replay(self, entry_id: int, entry: Entry, failed: _PartFailed) -> None:
        """Part of ``entry`` must wait: keep what was refused for good, store what is
        left (the written parts are gone from it) and let the replayer have it."""
        self._failed(failed.error)
        self._keep_refused(entry_id, entry, failed.refused)
        self.journal.update(entry_id, entry)
        self.journal.release(entry_id)

    def _replay_one(self, entry_id: int, entry: Entry, blocked: set[str]) -> bool:
        """Write (what is left of) one journal entry; False if some of it must wait."""
        try:
            permanent = self.run(entry, REPLAY_RETRY, blocked)
        except _PartFailed as failed:
            self._leave_for_replay(entry_id, entry, failed)
            log.debug("journal replay waits: %s", failed.error)
            return False
        except Exception as exc:  # noqa: BLE001 - never kill the replayer
            self.journal.fail(entry_id, f"{type(exc).__name__}: {exc}")
            return True
        if permanent:
            self._fail_refused(entry_id, entry, permanent)
        else:
            self.journal.done(entry_id)
            log.info("journaled %s written to Kubernetes; %d pending", entry["op"],
                     len(self.journal))
        return True

    def flush(self, timeout: float) -> bool:
        """Wait until the journal is empty (for tests and shutdown); True if it is."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while time.monotonic() < deadline:
            if len(self.journal) == 0:
                return True
            self._ensure_replayer()
            time.sleep(0.05)
        return len(self.journal) == 0

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._thread_lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        self.journal.close()
        self.client.close()


_registry: dict[Path, _Backend] = {}
_registry_lock = threading.Lock()


def _acquire(identity: PodIdentity, state_dir: Path, kubeconfig: str | None,
             self_env: Callable[[], Mapping[str, str]] | None,
             limits: JournalLimits) -> _Backend:
    key = state_dir.resolve()
    with _registry_lock:
        backend = _registry.get(key)
        if backend is None:
            state_dir.mkdir(parents=True, exist_ok=True)
            client = KubeClient.from_environment(kubeconfig=kubeconfig, retry=DIRECT_RETRY)
            backend = _Backend(identity, state_dir, client, self_env or (lambda: os.environ),
                               limits)
            _registry[key] = backend
        elif backend.identity != identity:
            raise KubeError(f"state dir {state_dir} is already used by pod "
                            f"{backend.identity.namespace}/{backend.identity.pod_name}")
        backend.refs += 1
        return backend


def _release(backend: _Backend) -> None:
    with _registry_lock:
        backend.refs -= 1
        if backend.refs > 0:
            return
        _registry.pop(backend.state_dir.resolve(), None)
    backend.close()


class InKubeStore(ResultStore):
    """Results and markers on the pod, in the result ConfigMap and as Events."""

    def __init__(self, cfg: StorageConfig, identity: PodIdentity, state_dir: Path, *,
                 kubeconfig: str | None = None,
                 self_env: Callable[[], Mapping[str, str]] | None = None) -> None:
        self.cfg = cfg
        self.identity = identity
        limits = JournalLimits(cfg.journal_max_entries, cfg.journal_max_bytes)
        self._backend = _acquire(identity, state_dir, kubeconfig, self_env, limits)
        self._closed = False

    @property
    def client(self) -> KubeClient:
        return self._backend.client

    @property
    def journal(self) -> Journal:
        return self._backend.journal

    # -- results -----------------------------------------------------------------
    def record_result(self, record: ResultRecord) -> str:
        record.pod = self.identity.pod_name
        self._remember(record)
        entry = {"op": "result", "cfg": _cfg_to_dict(self.cfg), "record": record.to_dict(),
                 "parts": list(_RESULT_PART_NAMES), "since": self._backend.clock()}
        return self._backend.submit_result(entry)

    def stats(self) -> dict[str, Any]:
        """The journal's numbers and whether Events are on (the storage process's metrics)."""
        return self._backend.stats()

    def latest_for_pod(self, plugin: str) -> ResultRecord | None:
        key = self.cfg.annotation_key or codec.DEFAULT_ANNOTATION_KEY
        candidates = [self._local_latest(plugin)]
        candidates += [ResultRecord.from_dict(e["record"]) for _, e in self.journal.entries()
                       if e.get("op") == "result" and e["record"].get("plugin") == plugin
                       and e["record"].get("success")]
        try:
            pod = self._backend.pod(refresh=True)
        except KubeError as exc:
            if not any(candidates):
                raise
            log.warning("pod annotation unreadable (%s); using the locally recorded result", exc)
        else:
            text = (pod.get("metadata", {}).get("annotations") or {}).get(key)
            # first: on a tie the annotation's copy (it knows the workload) wins
            recorded = codec.last_good_from_annotation(text, plugin)
            if recorded is None:
                recorded = self._recorded_elsewhere(plugin, text)
            candidates.insert(0, recorded)
        found = [c for c in candidates if c is not None]
        return max(found, key=lambda r: r.timestamp) if found else None

    def _recorded_elsewhere(self, plugin: str, annotation: str | None) -> ResultRecord | None:
        """No result of ours on the pod object: the Go kidecar's annotation, a pod
        recreated with the same name (its shard entry), or the old layout."""
        backend = self._backend
        workload = backend.workload()
        legacy = backend.legacy(self.cfg)
        go_version = go_annotation_version(annotation)
        if go_version is not None:
            url = legacy.go_url(plugin, self.identity.pod_name, go_version) or (
                self._url_from_workload(plugin, workload, go_version))
            if url:
                return ResultRecord(plugin=plugin, version=go_version, url=url, timestamp=0.0,
                                    pod=self.identity.pod_name, workload=str(workload))
            log.warning("the Go kidecar recorded %s for this pod but no URL for it; "
                        "not recovered from the annotation", go_version)
        good = good_from_pod_value(backend.shards.pod_value(
            self.cfg.result_configmap, self.cfg.result_namespace, self.identity.namespace,
            self.identity.pod_name, plugin, workload))
        if good is not None:
            found = url_of(self._workload_text(plugin, workload), good[0])
            if found is not None:
                return ResultRecord(plugin=plugin, version=good[0], url=found[0],
                                    sha256=found[1], timestamp=good[1],
                                    pod=self.identity.pod_name, workload=str(workload))
            log.warning("this pod's shard entry names %s, but its workload record no longer "
                        "knows that version's URL", good[0])
        return legacy.for_pod(plugin, self.identity.pod_name, workload)

    def _workload_text(self, plugin: str, workload: Workload) -> str | None:
        return self._backend.shards.workload_record(
            self.cfg.result_configmap, self.cfg.result_namespace, self.identity.namespace,
            workload, plugin)

    def _url_from_workload(self, plugin: str, workload: Workload, version: str) -> str:
        found = url_of(self._workload_text(plugin, workload), version)
        return found[0] if found else ""

    def latest_for_workload(self, plugin: str) -> ResultRecord | None:
        backend = self._backend
        workload = backend.workload()
        found = codec.parse_workload_entry(self._workload_text(plugin, workload), plugin,
                                           str(workload))
        if found is not None:
            return found
        return backend.legacy(self.cfg).for_workload(plugin, workload)

    def _remember(self, record: ResultRecord) -> None:
        """Keep the latest successful result per plugin on local disk too (API may be down)."""
        if not record.success:
            return
        path = self._backend.latest_path
        with self._backend.latest_lock:
            data = _read_json(path)
            data[record.plugin] = record.to_dict()
            atomic_write_json(path, data)

    def _local_latest(self, plugin: str) -> ResultRecord | None:
        data = _read_json(self._backend.latest_path).get(plugin)
        return ResultRecord.from_dict(data) if isinstance(data, dict) else None

    # -- markers and events ------------------------------------------------------
    def apply_markers(self, update: MarkerUpdate) -> str:
        entry = {"op": "markers", "cfg": _cfg_to_dict(self.cfg), "labels": dict(update.labels),
                 "annotations": dict(update.annotations), "target_value": update.target_value,
                 "parts": ["pod", "target"], "since": self._backend.clock()}
        return self._backend.submit(entry, merge=True)

    def emit_event(self, reason: str, message: str, warning: bool = False) -> None:
        if self._backend.events_suppressed():
            return  # best effort, said once when they were turned off
        entry = {"op": "event", "reason": reason, "message": message, "warning": warning,
                 "time": time.time(), "parts": ["event"]}
        try:
            self._backend.submit(entry)
        except KubeError as exc:
            log.error("event %s not recorded: %s", reason, exc)

    # -- lifecycle ---------------------------------------------------------------
    def flush(self, timeout: float = 30.0) -> bool:
        """Block until every journaled write is in Kubernetes (True) or ``timeout``."""
        return self._backend.flush(timeout)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release(self._backend)


def _part_object(entry: Entry, part: str) -> str:
    """The Kubernetes object a part writes: writes of one object keep their order.

    Events are separate objects, but keep their order among themselves.
    """
    cfg = entry.get("cfg") or {}
    if part == "configmap":
        return f"configmap:{cfg.get('result_namespace')}/{cfg.get('result_configmap')}"
    if part == "target":
        return "target:" + json.dumps([cfg.get("target"), cfg.get("json_path")], sort_keys=True)
    return part  # "pod", "event"


def _reasons(refused: Refused) -> str:
    return "; ".join(f"{part}: {error}" for part, error in refused)


def _cause(refused: Refused) -> str:
    """What a refusal is about, without the entry's details: logged once per cause."""
    return "; ".join(f"{part}: {type(error).__name__} {error.status} {error.reason}"
                     for part, error in refused)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


__all__ = ["InKubeStore", "KubeError", "KubeUnavailable", "result_reason"]
