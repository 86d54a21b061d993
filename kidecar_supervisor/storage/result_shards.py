"""Results spread over a fixed set of small ConfigMaps: O(1) etcd bytes per result.

Every write of an object stores the whole object again in etcd, so one
ConfigMap holding every pod's entry costs O(fleet) bytes per result. Here a
pod's entry goes to one of ``SHARD_COUNT`` ConfigMaps named
``<resultConfigMap>-<nnnn>``, chosen by a stable hash (``placement_key``): a pod
named ``<workload name>-<ordinal>`` (OKG GameServerSets and StatefulSets name
their pods so) hashes as ``<namespace>/<Kind>/<name>#<ordinal // ORDINAL_BLOCK>``,
so up to ``ORDINAL_BLOCK`` neighbouring pods of a workload share a shard, and
block 0 also holds the workload record; any other pod (a Deployment's random
suffix) hashes as ``<namespace>/<pod>``. A pod recreated with its name lands in
the same shard. A write stores only its shard (≤ ORDINAL_BLOCK entries of one
block, plus the rare other block hashed there). The names are fixed, so the
Role lists every one of them in ``resourceNames`` (config/rbac.yaml): no
get/patch on other ConfigMaps.

Keys and values (compact: etcd stores them on every write of the shard):

* pod ``<plugin>_<ns>_<pod>`` → ``["v3",true,1795000000]`` in shard(pod):
  version, success, unix time of this pod's latest attempt, and after a
  failure the latest good version and its time (``["v4",false,t,"v3",t3]``);
* workload ``<plugin>_<ns>_<Kind>_<name>`` → the workload record in
  shard(workload) = the shard of its ordinal block 0: the newest successful
  result (version, url, sha256, time, pod) and ``urls``, the URL of each of
  its last ``KEEP_URLS`` versions, which is where a recreated pod finds the
  URL of its own version;
* ``<workload key>.seen`` → ``["v3",1795000000.5]`` in shard(pod): what the
  workload record was when a pod of that shard last compared. A successful
  result whose version this copy already names costs nothing more: the
  answer of the pod-entry patch shows it. Only the first pod of a shard to
  reach a new version reads and compare-and-swaps the workload record (and
  then the copy), so a rollout adds about one workload read per shard, not
  per pod; a pod alone in its shard and in no ordinal block skips the copy
  (nobody would read it; a block's first pod writes it for the pods to come).
  Pods of block 0 need no copy: their patch answer shows the record itself,
  so a workload of ≤ ORDINAL_BLOCK pods pays one swap per version, nothing
  else, and the first write of a new shard creates it with the record.
  A late result of an older version only adds its URL to the record
  (once per version), so a recreated pod on that version still finds it.

The workload record never moves backwards: it is replaced by a JSON patch
whose ``test`` op checks the value compared against
(``ResultConfigMap.advance_key``). A ``.seen`` copy is a hint, set by a merge
patch only when it names an older time: a race may leave an older one, which
costs the next pod of the shard one read of the record, never a wrong answer
(the copy is written only after the record was seen naming that version).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from typing import Any

from kidecar_supervisor.storage import result_codec as codec
from kidecar_supervisor.storage.base import ResultRecord
from kidecar_supervisor.storage.coalesce import Coalescer
from kidecar_supervisor.storage.kube_api import KubeClient, KubeNotFound, ResourcePath
from kidecar_supervisor.storage.result_configmap import ResultConfigMap
from kidecar_supervisor.storage.workload import Workload

log = logging.getLogger("kidecar.storage.shards")

#: fixed, so the Role can name every shard; about ten pod entries each at 10,000 pods
SHARD_COUNT = 1024
#: ordinals per shard block: 16 keeps a shard about as small as hashing pods one by one
#: (~1.2 KiB of entries, so etcd bytes per result stay ~1 KiB) while a workload of
#: ≤ 16 pods lives in one shard with its record (no workload read in a rollout)
ORDINAL_BLOCK = 16
#: versions whose URL a workload record remembers (for recreated pods)
KEEP_URLS = 16
SEEN_SUFFIX = ".seen"
STRIP_MANAGED_FIELDS = True


def shard_index(text: str, count: int = SHARD_COUNT) -> int:
    """A stable index for ``text`` (sha256, not Python's per-process ``hash``)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % count


def _ordinal(pod: str, workload: Workload) -> int | None:
    """The ordinal of a pod named ``<workload name>-<n>`` (canonical digits), else None."""
    if workload.kind == "Pod" or not pod.startswith(workload.name + "-"):
        return None
    rest = pod[len(workload.name) + 1:]
    if not rest.isdigit() or not rest.isascii() or str(int(rest)) != rest:
        return None
    return int(rest)


def placement_key(pod_namespace: str, pod: str, workload: Workload) -> str:
    """What a pod's shard is hashed from: its workload's ordinal block, else its name.

    Writers and readers (restore of a recreated pod) call this with the same
    pod name and workload, so both find the same shard.
    """
    ordinal = _ordinal(pod, workload)
    if ordinal is None:
        return f"{pod_namespace}/{pod}"
    return f"{pod_namespace}/{workload.kind}/{workload.name}#{ordinal // ORDINAL_BLOCK}"


def workload_placement_key(pod_namespace: str, workload: Workload) -> str:
    """What a workload record's shard is hashed from: its block 0 (a bare pod: the pod)."""
    if workload.kind == "Pod":
        return f"{pod_namespace}/{workload.name}"
    return f"{pod_namespace}/{workload.kind}/{workload.name}#0"


def shard_name(base: str, index: int) -> str:
    return f"{base}-{index:04d}"


def all_shard_names(base: str, count: int = SHARD_COUNT) -> list[str]:
    """Every shard name, for the Role's ``resourceNames``."""
    return [shard_name(base, i) for i in range(count)]


def pod_value(record: ResultRecord, last_good: ResultRecord | None) -> str:
    """``[version, success, time]`` (+ ``lastGood`` version and time after a failure)."""
    body: list[Any] = [record.version, record.success, int(record.timestamp)]
    if not record.success and last_good is not None:
        body += [last_good.version, int(last_good.timestamp)]
    return json.dumps(body, separators=(",", ":"))


def good_from_pod_value(text: str | None) -> tuple[str, float] | None:
    """(version, time) of the latest success a pod entry names (old 3-item form too)."""
    try:
        data = json.loads(text or "")
    except ValueError:
        return None
    if not isinstance(data, list) or len(data) < 3 or not isinstance(data[0], str):
        return None
    if data[1] is True:
        return data[0], float(data[2])
    if len(data) >= 5 and isinstance(data[3], str):
        return data[3], float(data[4])
    return None


def workload_value(record: ResultRecord, previous: str | None) -> str:
    """The workload record after ``record``: it is the newest unless ``previous`` names a
    newer one, and its URL joins those of the recent versions either way."""
    urls: dict[str, list[str]] = {}
    old = _load(previous)
    if isinstance(old, dict) and isinstance(old.get("urls"), dict):
        urls = {k: v for k, v in old["urls"].items() if isinstance(v, list)}
    urls.pop(record.version, None)
    urls[record.version] = [record.url, record.sha256]
    while len(urls) > KEEP_URLS:
        urls.pop(next(iter(urls)))
    known = codec.parse_workload_entry(previous, record.plugin, "")
    if known is not None and known.timestamp > record.timestamp:
        body = {k: v for k, v in old.items() if k != "urls"}  # an older result: URL only
    else:
        body = json.loads(codec.workload_entry(record))
    body["urls"] = urls
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def _knows_url(text: str | None, record: ResultRecord) -> bool:
    found = url_of(text, record.version)
    return found is not None and found == (record.url, record.sha256)


def url_of(workload_text: str | None, version: str) -> tuple[str, str] | None:
    """(url, sha256) of ``version`` from a workload record, if it remembers it."""
    data = _load(workload_text)
    if not isinstance(data, dict):
        return None
    if data.get("version") == version:
        return str(data.get("url", "")), str(data.get("sha256", ""))
    found = (data.get("urls") or {}).get(version)
    if isinstance(found, list) and found:
        return str(found[0]), str(found[1]) if len(found) > 1 else ""
    return None


def seen_value(record: ResultRecord) -> str:
    return json.dumps([record.version, record.timestamp], separators=(",", ":"))


def _seen_covers(text: str | None, record: ResultRecord) -> bool:
    """Whether the workload record is known to name ``record``'s version already."""
    data = _load(text)
    return isinstance(data, list) and len(data) == 2 and data[0] == record.version


def _seen_older(text: str | None, record: ResultRecord) -> bool:
    """Whether the ``.seen`` copy should move to ``record`` (never backwards)."""
    data = _load(text)
    if not (isinstance(data, list) and len(data) == 2):
        return True
    return data[0] != record.version and float(data[1]) < record.timestamp


def _other_pods(shard: dict[str, Any], mine: str) -> bool:
    """Whether the shard holds pod entries (three key segments) besides ``mine``."""
    return any(k != mine and k.count("_") == 2 and not k.endswith(SEEN_SUFFIX)
               for k in shard.get("data") or {})


def _load(text: str | None) -> Any:
    try:
        return json.loads(text or "")
    except ValueError:
        return None


class ShardedResults:
    """Writes and reads results in the shards of one result ConfigMap name."""

    def __init__(self, client: KubeClient, coalescer: Coalescer,
                 count: int = SHARD_COUNT) -> None:
        self.client = client
        self.count = count
        self.strip_managed_fields = STRIP_MANAGED_FIELDS
        self.configmaps = ResultConfigMap(client, coalescer)
        #: workload shards as this sidecar last swapped them: its next swap of the
        #: same record (a pod reporting version after version) needs no read first;
        #: if someone else wrote meanwhile, the swap's test fails and it reads
        self._swapped: dict[ResourcePath, dict[str, Any]] = {}
        self._swapped_lock = threading.Lock()

    def pod_shard(self, base: str, namespace: str, pod_namespace: str, pod: str,
                  workload: Workload) -> ResourcePath:
        key = placement_key(pod_namespace, pod, workload)
        return ResultConfigMap.path(shard_name(base, shard_index(key, self.count)), namespace)

    def workload_shard(self, base: str, namespace: str, pod_namespace: str,
                       workload: Workload) -> ResourcePath:
        key = workload_placement_key(pod_namespace, workload)
        return ResultConfigMap.path(shard_name(base, shard_index(key, self.count)), namespace)

    # -- write -------------------------------------------------------------------
    def write(self, base: str, namespace: str, pod_namespace: str, workload: Workload,
              record: ResultRecord, last_good: ResultRecord | None,
              pod_entry: bool = True) -> None:
        """The pod's entry; on success the workload record (when it is behind).

        ``pod_entry=False``: a result older than the pod's current one (a replay)
        only advances the workload record, if that is behind.
        """
        pk = codec.pod_key(record.plugin, pod_namespace, record.pod)
        wk = codec.workload_key(record.plugin, pod_namespace, workload)
        pod_path = self.pod_shard(base, namespace, pod_namespace, record.pod, workload)
        work_path = self.workload_shard(base, namespace, pod_namespace, workload)
        together = work_path == pod_path and record.success
        # a shard this write creates starts with the record: no swap right after
        first = {wk: workload_value(record, None)} if together else None
        answer = self.configmaps.put(pod_path, {pk: pod_value(record, last_good)},
                                     self.strip_managed_fields, first) if pod_entry else None
        if not record.success:
            return
        if together:  # the answer shows the record (or the cached swap does)
            if answer is None:
                with self._swapped_lock:
                    answer = self._swapped.pop(work_path, None)
            self._advance_record(work_path, wk, record, answer)
            return
        seen_key = codec.fit_key(wk + SEEN_SUFFIX)
        seen = ((answer or {}).get("data") or {}).get(seen_key)
        if answer is not None and _seen_covers(seen, record):
            return
        with self._swapped_lock:
            known = self._swapped.pop(work_path, None)
        self._advance_record(work_path, wk, record, known)
        if answer is None:
            return  # a replayed older result: the copy is for the newer ones
        grouped = _ordinal(record.pod, workload) is not None  # its block's pods follow
        if not grouped and not _other_pods(answer, pk):
            return  # no other pod in this shard to save a read: the copy can wait
        if _seen_older(seen, record):
            # a plain merge patch, not a compare-and-swap: the copy is only a hint (a
            # race that leaves an older one costs the next pod one read, nothing is
            # lost), and pods of a block finishing together would all fail a swap's test
            self.configmaps.put(pod_path, {seen_key: seen_value(record)},
                                self.strip_managed_fields)

    def _advance_record(self, path: ResourcePath, wk: str, record: ResultRecord,
                        current: dict[str, Any] | None) -> None:
        def newer(old: str | None) -> bool:
            """Write if ``record`` is newer, or its version's URL is not remembered yet."""
            known = codec.parse_workload_entry(old, record.plugin, "")
            if known is None:
                return True
            if known.timestamp >= record.timestamp:
                if known.timestamp > record.timestamp:
                    log.info("result %s of %s is older than the workload record (%s); "
                             "record kept", record.version, record.pod, known.version)
                return not _knows_url(old, record)
            return (known.version, known.url, known.sha256) != (
                record.version, record.url, record.sha256) or not _knows_url(old, record)

        after = self.configmaps.advance_key(path, wk, lambda old: workload_value(record, old),
                                            newer, current)
        if after is not None:
            with self._swapped_lock:
                self._swapped[path] = after

    # -- read --------------------------------------------------------------------
    def read(self, path: ResourcePath) -> dict[str, str]:
        """The data of one shard ({} if it does not exist yet)."""
        try:
            found = self.client.get(path)
        except KubeNotFound:
            return {}
        data: dict[str, str] = found.get("data") or {}
        return data

    def workload_record(self, base: str, namespace: str, pod_namespace: str,
                        workload: Workload, plugin: str) -> str | None:
        path = self.workload_shard(base, namespace, pod_namespace, workload)
        return self.read(path).get(codec.workload_key(plugin, pod_namespace, workload))

    def pod_value(self, base: str, namespace: str, pod_namespace: str, pod: str,
                  plugin: str, workload: Workload) -> str | None:
        path = self.pod_shard(base, namespace, pod_namespace, pod, workload)
        return self.read(path).get(codec.pod_key(plugin, pod_namespace, pod))
