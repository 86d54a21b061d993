"""Kubernetes Events on the sidecar's pod, so ``kubectl describe pod`` tells the story.

Events are core/v1 Events whose ``involvedObject`` carries the pod's uid
(``kubectl describe`` selects events by uid). A repeat of the same event
within ``AGGREGATE_WINDOW`` bumps ``count``/``lastTimestamp`` of the existing
Event with one PATCH, like client-go's recorder, instead of creating another
object; this is why the RBAC grants ``patch`` on events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kidecar_supervisor.storage.kube_api import (
    KubeClient,
    KubeConflict,
    KubeNotFound,
    ResourcePath,
)
from kidecar_supervisor.storage.result_codec import iso_time

AGGREGATE_WINDOW = 600.0
MAX_MESSAGE = 1024
COMPONENT = "kidecar"


@dataclass
class _Seen:
    name: str
    count: int
    at: float


class EventRecorder:
    """Creates (or aggregates) Events on the pod ``involved()`` returns. Thread-safe."""

    def __init__(self, client: KubeClient, namespace: str,
                 involved: Callable[[], dict[str, Any]], host: str = "") -> None:
        self.client = client
        self.namespace = namespace
        self.involved = involved
        self.host = host
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str, bool], _Seen] = {}

    def emit(self, reason: str, message: str, warning: bool = False,
             when: float | None = None) -> None:
        """Record the event now (or as of ``when``); raises KubeError on failure."""
        when = time.time() if when is None else when
        message = message[:MAX_MESSAGE]
        key = (reason, message, warning)
        with self._lock:
            seen = self._seen.get(key)
        if seen is not None and when - seen.at < AGGREGATE_WINDOW:
            try:
                self.client.merge_patch(self._path(seen.name),
                                        {"count": seen.count + 1,
                                         "lastTimestamp": iso_time(when)})
                with self._lock:
                    seen.count += 1
                    seen.at = when
                return
            except KubeNotFound:
                pass  # expired or deleted: create a fresh one
        body = self._body(reason, message, warning, when)
        self.create(body)
        with self._lock:
            self._seen[key] = _Seen(body["metadata"]["name"], 1, when)

    def create(self, body: dict[str, Any]) -> None:
        """Create the Event; one that already exists under our unique name is ours.

        The client retries a create whose answer was lost (timeout, 5xx); if the
        first try did land, the retry gets 409 AlreadyExists: that is success.
        """
        try:
            self.client.create(self._path(""), body)
        except KubeConflict as exc:
            if exc.reason != "AlreadyExists":
                raise

    def _path(self, name: str) -> ResourcePath:
        return ResourcePath("", "v1", "events", self.namespace, name)

    def _body(self, reason: str, message: str, warning: bool, when: float) -> dict[str, Any]:
        involved = self.involved()
        stamp = iso_time(when)
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{involved['name']}.{time.time_ns():x}",
                         "namespace": self.namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT, **({"host": self.host} if self.host else {})},
            "reportingComponent": COMPONENT,
            "reportingInstance": involved["name"],
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
