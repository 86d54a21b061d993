"""How results look on the pod and in the result ConfigMap (pure encoding).

Pod annotation (``annotationKey``): one JSON object, the result of the
latest attempt, plus ``lastGood`` (the latest *successful* one) when that
attempt failed, so a restarted container comes back on a version that works::

    {"plugin": "hot_update", "version": "v3", "success": false, "url": "...",
     "time": "2026-11-22T10:00:00Z", "timestamp": 1795..., "message": "...",
     "sha256": "", "pod": "gs-0", "workload": "GameServerSet/gs",
     "lastGood": {"version": "v2", "url": "...", "time": "...", "timestamp": ...}}

Pod labels (``labelKey``, when set): ``<labelKey>`` = the version and
``<labelKey>-success`` = ``true``/``false``, both valid label values.

Result ConfigMap: one key per pod and one per workload, so every write is a
merge patch of its own keys (no read-modify-write, no lost entries). A
ConfigMap holds at most 1 MiB of keys + values, and the API server also
stores ``managedFields`` listing every key again, so pod entries are compact:

* pod key ``<plugin>_<namespace>_<pod>`` → ``["v3",false,1795000000]``
  (version, success, unix time); ~65 bytes for typical names, so 10,000 pods
  of one workload take ~650 KiB;
* workload key ``<plugin>_<namespace>_<Kind>_<name>`` → the full newest
  successful result (version, url, sha256, time, pod).

``_`` never occurs in namespaces, pod names or kinds, so keys split
unambiguously (the plugin name has its ``_`` turned into ``-``). The URL is
kept per workload (and on each pod's annotation), not per pod entry: with it
10,000 entries would not fit. Above ``PRUNE_ABOVE`` bytes the oldest pod
entries are dropped (``prune_keys``); pod entries are informational, the pod
annotation and the workload entry are what recovery reads.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Mapping
from typing import Any

from kidecar_supervisor.storage.base import ResultRecord
from kidecar_supervisor.storage.workload import Workload

DEFAULT_ANNOTATION_KEY = "sidecar.vke.volcengine.com/hot-update-result"
SUCCESS_LABEL_SUFFIX = "-success"
MAX_LABEL_VALUE = 63
MAX_CONFIGMAP_KEY = 253
#: the API server refuses a ConfigMap whose keys + values exceed 1 MiB
CONFIGMAP_LIMIT = 1024 * 1024
#: prune pod entries above this (leaves room for managedFields in etcd's 1.5 MiB)
PRUNE_ABOVE = 900 * 1024
#: ... down to this, so pruning is rare
PRUNE_TO = 768 * 1024
MAX_MESSAGE = 1024

_LABEL_INVALID = re.compile(r"[^A-Za-z0-9_.-]")
_KEY_INVALID = re.compile(r"[^A-Za-z0-9-]")


# -- labels ------------------------------------------------------------------------

def sanitize_label_value(value: str) -> str:
    """A valid label value for ``value``: ≤63 chars of [A-Za-z0-9_.-], alnum at both ends.

    Invalid characters become ``_``; a value cut to length gets a short hash
    suffix so two long versions never map to the same label.
    """
    cleaned = _LABEL_INVALID.sub("_", value)
    if len(cleaned) > MAX_LABEL_VALUE:
        digest = hashlib.sha256(value.encode()).hexdigest()[:8]
        cleaned = cleaned[: MAX_LABEL_VALUE - 9].rstrip("_.-") + "-" + digest
    return _strip_non_alnum(cleaned)


def _strip_non_alnum(value: str) -> str:
    start, end = 0, len(value)
    while start < end and not value[start].isalnum():
        start += 1
    while end > start and not value[end - 1].isalnum():
        end -= 1
    return value[start:end]


def success_label_key(label_key: str) -> str:
    """``<labelKey>-success``, its name part kept within 63 characters."""
    prefix, slash, name = label_key.rpartition("/")
    name = name[: MAX_LABEL_VALUE - len(SUCCESS_LABEL_SUFFIX)] + SUCCESS_LABEL_SUFFIX
    return f"{prefix}{slash}{name}"


def result_labels(label_key: str, record: ResultRecord) -> dict[str, str]:
    """The labels a result sets (none when no ``labelKey`` is configured)."""
    if not label_key:
        return {}
    return {
        label_key: sanitize_label_value(record.version),
        success_label_key(label_key): "true" if record.success else "false",
    }


# -- pod annotation ----------------------------------------------------------------

def iso_time(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _summary(record: ResultRecord) -> dict[str, Any]:
    return {"version": record.version, "url": record.url, "sha256": record.sha256,
            "time": iso_time(record.timestamp), "timestamp": record.timestamp}


def annotation_value(record: ResultRecord, previous: str | None) -> str:
    """The annotation JSON for ``record``; ``previous`` (the current value) gives ``lastGood``."""
    body: dict[str, Any] = {
        "plugin": record.plugin, "version": record.version, "success": record.success,
        "url": record.url, "time": iso_time(record.timestamp), "timestamp": record.timestamp,
        "message": record.message[:MAX_MESSAGE], "sha256": record.sha256,
        "pod": record.pod, "workload": record.workload,
    }
    if not record.success:
        last_good = last_good_from_annotation(previous, record.plugin)
        if last_good is not None:
            body["lastGood"] = _summary(last_good)
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def last_good_from_annotation(text: str | None, plugin: str) -> ResultRecord | None:
    """The latest successful result of ``plugin`` an annotation value records, if any."""
    data = load_object(text)
    if data is None or data.get("plugin", plugin) != plugin:
        return None
    if data.get("success") is True:
        return _record_from(data, plugin, data)
    last_good = data.get("lastGood")
    if isinstance(last_good, dict) and last_good.get("version"):
        return _record_from(last_good, plugin, data)
    return None


def _record_from(src: Mapping[str, Any], plugin: str, outer: Mapping[str, Any]) -> ResultRecord:
    return ResultRecord(
        plugin=plugin, version=str(src.get("version", "")), url=str(src.get("url", "")),
        success=True, message=str(src.get("message", "")) if src is outer else "",
        timestamp=_time_of(src.get("timestamp")), sha256=str(src.get("sha256", "")),
        pod=str(outer.get("pod", "")), workload=str(outer.get("workload", "")),
    )


def load_object(text: str | None) -> dict[str, Any] | None:
    """A stored JSON object (annotation, ConfigMap value), or None for anything else."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# -- result ConfigMap --------------------------------------------------------------

def plugin_tag(plugin: str) -> str:
    """The plugin name as a key segment: no ``_`` (the separator)."""
    return _KEY_INVALID.sub("-", plugin) or "result"


def fit_key(key: str) -> str:
    """``key`` as a valid ConfigMap key length (a long one is cut and gets a hash)."""
    if len(key) <= MAX_CONFIGMAP_KEY:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return key[: MAX_CONFIGMAP_KEY - 13] + "-" + digest


def pod_key(plugin: str, namespace: str, pod: str) -> str:
    return fit_key(f"{plugin_tag(plugin)}_{namespace}_{pod}")


def workload_key(plugin: str, namespace: str, workload: Workload) -> str:
    return fit_key(f"{plugin_tag(plugin)}_{namespace}_{workload.kind}_{workload.name}")


def pod_entry(record: ResultRecord) -> str:
    """``["v3",false,1795000000]``: version, success, unix time."""
    return json.dumps([record.version, record.success, int(record.timestamp)],
                      separators=(",", ":"))


def parse_pod_entry(text: str) -> tuple[str, bool, int] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if (isinstance(data, list) and len(data) == 3 and isinstance(data[0], str)
            and isinstance(data[1], bool) and isinstance(data[2], int | float)
            and math.isfinite(data[2])):  # JSON readers take 1e999 (inf) and NaN
        return data[0], data[1], int(data[2])
    return None


def _time_of(value: Any) -> float:
    """A stored unix time; 0 (unknown) for anything that is not a finite number."""
    try:
        number = float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def workload_entry(record: ResultRecord) -> str:
    """The newest successful result of a workload, with its URL."""
    body = {**_summary(record), "pod": record.pod}
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def parse_workload_entry(text: str | None, plugin: str, workload: str) -> ResultRecord | None:
    data = load_object(text)
    if data is None or not data.get("version"):
        return None
    return ResultRecord(
        plugin=plugin, version=str(data["version"]), url=str(data.get("url", "")),
        success=True, timestamp=_time_of(data.get("timestamp")),
        sha256=str(data.get("sha256", "")), pod=str(data.get("pod", "")), workload=workload,
    )


def data_size(data: Mapping[str, str]) -> int:
    """What the API server counts against the 1 MiB limit: bytes of keys + values."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in data.items())


def prune_keys(data: Mapping[str, str], above: int = PRUNE_ABOVE,
               to: int = PRUNE_TO, keep: frozenset[str] = frozenset()) -> list[str]:
    """Oldest pod entries to drop so ``data`` shrinks to ``to`` bytes (none if ≤ ``above``).

    Only pod entries (3 key segments, parseable value) are candidates; workload
    entries and foreign keys are never dropped, nor anything in ``keep``.
    """
    size = data_size(data)
    if size <= above:
        return []
    candidates: list[tuple[int, str]] = []
    for key, value in data.items():
        if key in keep or key.count("_") != 2:
            continue
        entry = parse_pod_entry(value)
        if entry is not None:
            candidates.append((entry[2], key))
    candidates.sort()
    dropped: list[str] = []
    for _, key in candidates:
        if size <= to:
            break
        size -= len(key.encode()) + len(data[key].encode())
        dropped.append(key)
    return dropped
