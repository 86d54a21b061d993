"""A watch on this sidecar's own pod: its annotations as they change, without polling.

The storage process is the one process that talks to Kubernetes, so the
watch lives here, once per sidecar (``shared``), whatever number of plugins
ask. Plugins long-poll it over the pipe (``wait``): the call returns as soon
as the watched annotation changes, or after ``wait`` seconds with the value
unchanged. Pipe calls are cheap; API requests are not: the API sees one
list at start and one long watch request at a time (the server ends a watch
after ``timeoutSeconds``; it is resumed from the last resourceVersion).

Protocol (like client-go's reflector, for one object):

* list with ``fieldSelector=metadata.name=<pod>`` → the pod and a
  resourceVersion;
* watch from that resourceVersion (bookmarks on), keeping the newest
  resourceVersion of every event;
* a 410 Gone (as an HTTP status or an ``ERROR`` event): the resourceVersion
  is too old, list again;
* any other error (API down, 5xx, 403): back off (exponential, jittered,
  capped) and resume the watch from the last resourceVersion, so a change
  made while the API server restarted is still seen: the resumed watch
  replays it, or answers 410 and the relist carries it.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import urllib3

from kidecar_supervisor.storage.kube_api import KubeClient, KubeError, ResourcePath

log = logging.getLogger("kidecar.storage.pod_watch")

#: the API server ends each watch after this long; it is then resumed (not a poll: the
#: request is open the whole time and answers the moment the pod changes)
WATCH_SECONDS = 240
#: backoff after an error: base, cap (seconds)
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0


class _Gone(Exception):
    """410: the resourceVersion is older than the API server keeps; list again."""


@dataclass
class Snapshot:
    """What ``wait`` answers: the annotations' revision, the value, whether synced."""

    revision: int
    value: str | None
    synced: bool

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "value": self.value, "synced": self.synced,
                "supported": True}


def backoff(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Exponential backoff with equal jitter: never 0, never in lock-step across a fleet."""
    ceiling = min(cap, base * (2 ** min(attempt, 16)))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def watch_events(chunks: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    """The JSON events of a watch response body, one per line (chunks split anywhere)."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)
    if buffer.strip():
        yield json.loads(buffer)


class PodWatch:
    """Follows one pod's annotations; ``wait(key, revision, seconds)`` long-polls them."""

    def __init__(self, client: KubeClient, namespace: str, name: str,
                 watch_seconds: int = WATCH_SECONDS) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.watch_seconds = watch_seconds
        self._annotations: dict[str, str] = {}
        self._revision = 0
        self._synced = False
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.resource_version = ""
        #: counters for tests and benchmarks: lists, watch requests, 410s, errors
        self.lists = 0
        self.watches = 0
        self.gone = 0
        self.errors = 0
        self._response: Any = None
        self._last_error = ""

    # -- the caller's side -----------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pod-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """End the watch (the storage process stops) and wake every waiter."""
        self._stop.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()
            except Exception:  # noqa: BLE001 - closing a stream that may be gone already
                pass
        with self._changed:
            self._changed.notify_all()

    def wait(self, key: str, revision: int, seconds: float) -> Snapshot:
        """The value of annotation ``key`` once the revision passes ``revision`` (any
        annotation change counts) or after ``seconds``, whichever comes first."""
        deadline = time.monotonic() + max(0.0, seconds)
        with self._changed:
            while not self._stop.is_set():
                if self._synced and self._revision > revision:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return Snapshot(self._revision, self._annotations.get(key), self._synced)

    # -- the watch ---------------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                if not self.resource_version:
                    self._list()
                self._watch()
                attempt = 0  # the server ended the watch normally: resume at once
                self._last_error = ""
            except _Gone:
                self.gone += 1
                log.info("pod watch: resourceVersion %s is gone (410); listing again",
                         self.resource_version)
                self.resource_version = ""
            except (KubeError, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                if self._stop.is_set():
                    return
                self.errors += 1
                delay = backoff(attempt)
                attempt += 1
                said = _short(exc)
                # the same error over and over (e.g. a missing RBAC verb) is said once
                level = logging.DEBUG if said == self._last_error else logging.WARNING
                self._last_error = said
                log.log(level, "pod watch of %s/%s: %s; retrying in %.1fs", self.namespace,
                        self.name, said, delay)
                self._stop.wait(delay)

    def _path(self) -> ResourcePath:
        return ResourcePath("", "v1", "pods", self.namespace)

    def _list(self) -> None:
        self.lists += 1
        answer = self.client.request("GET", self._path(),
                                     query={"fieldSelector": f"metadata.name={self.name}"})
        items = answer.get("items") or []
        self._set(items[0] if items else None)
        self.resource_version = str(answer.get("metadata", {}).get("resourceVersion", ""))

    def _watch(self) -> None:
        query = {"watch": "1", "fieldSelector": f"metadata.name={self.name}",
                 "resourceVersion": self.resource_version, "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(self.watch_seconds)}
        url = self.client.host + self._path().url() + "?" + urlencode(query)
        headers = {"Accept": "application/json", "User-Agent": self.client.user_agent}
        headers.update(self.client.connection.auth())
        self.watches += 1
        with self.client._lock:  # noqa: SLF001 - the client's request count includes watches
            self.client.requests += 1
        response = self.client.connection.pool.request(
            "GET", url, headers=headers, preload_content=False, retries=False,
            timeout=urllib3.Timeout(connect=5.0, read=self.watch_seconds + 30.0))
        self._response = response
        try:
            if response.status == 410:
                raise _Gone()
            if response.status == 401:
                self.client.connection.refresh()
            if response.status != 200:
                body = response.read(2048).decode("utf-8", "replace")
                raise KubeError(f"watch pods {self.name!r}: {response.status} {body[:300]}",
                                response.status)
            for event in watch_events(response.stream(8192)):
                self._event(event)
        finally:
            self._response = None
            # never hand a connection with unread bytes back to the pool (a 410's body, a
            # stream cut short by an ERROR event): the next list would read them. A watch
            # is one connection per few minutes, so closing it costs nothing measurable
            response.close()
            response.release_conn()

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise KubeError(f"watch error: {obj.get('message', obj)}", int(obj.get("code") or 0))
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self.resource_version = str(version)
        if kind in ("ADDED", "MODIFIED"):
            self._set(obj)
        elif kind == "DELETED":
            self._set(None)

    def _set(self, pod: dict[str, Any] | None) -> None:
        annotations = dict(((pod or {}).get("metadata") or {}).get("annotations") or {})
        with self._changed:
            first = not self._synced
            self._synced = True
            if annotations != self._annotations or first:
                self._annotations = annotations
                self._revision += 1
                self._changed.notify_all()


_watches: dict[tuple[str, str], PodWatch] = {}
_watches_lock = threading.Lock()


def shared(client: KubeClient, namespace: str, name: str) -> PodWatch:
    """The one watch of this process on pod ``namespace/name`` (started on first use)."""
    with _watches_lock:
        watch = _watches.get((namespace, name))
        if watch is None:
            watch = PodWatch(client, namespace, name)
            _watches[(namespace, name)] = watch
            watch.start()
        return watch


def stop_all() -> None:
    """Stop every watch of this process (the storage process is stopping)."""
    with _watches_lock:
        watches = list(_watches.values())
        _watches.clear()
    for watch in watches:
        watch.stop()


def _short(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or exc)[:300]
