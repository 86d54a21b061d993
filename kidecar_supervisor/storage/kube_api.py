"""A small Kubernetes REST client: config loading, retries, clear errors.

Only the storage process imports this module. It talks raw JSON over one
urllib3 pool (``kube_connection``): kidecar only needs get/create/merge-patch/
JSON-patch on a handful of paths, including custom resources known only at
run time, and never needs the kubernetes package's generated model classes
(which cost memory and differ between client versions); that package is
used only to read a kubeconfig outside a cluster.

Retries are bounded (attempts and a deadline) with exponential backoff and
jitter, for connection errors, 429 (honouring ``Retry-After``) and 5xx.
Everything else is raised at once as a typed ``KubeError`` whose message says
what was asked and what the API answered; a 401/403 additionally logs one
line naming the verb and resource the ServiceAccount is missing — once per
verb, resource and namespace for the life of the process (a GameServer patch
refused a thousand times says so once), unless the resource is in
``forbidden_quiet`` (its caller reports it, e.g. Events turning off).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import urllib3

from kidecar_supervisor.storage import kube_connection
from kidecar_supervisor.storage.kube_connection import (
    SERVICE_ACCOUNT_DIR,
    Connection,
    KubeConfigError,
)

log = logging.getLogger("kidecar.storage.kube")

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
_VERBS = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


class KubeError(Exception):
    """The API refused or could not be reached. ``retriable``: worth journaling."""

    retriable = False

    def __init__(self, message: str, status: int = 0, reason: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class KubeUnavailable(KubeError):
    """No answer, 429 or 5xx: the API is (temporarily) not there."""

    retriable = True


class KubeForbidden(KubeError):
    """401/403: the ServiceAccount lacks a permission (fixable without a restart)."""

    retriable = True


class KubeNotFound(KubeError):
    """404: the object (or its resource type) does not exist."""


class KubeConflict(KubeError):
    """409: a precondition (resourceVersion) failed or the object already exists."""


class KubeInvalid(KubeError):
    """400/422 and other 4xx: the request itself is wrong and will stay wrong."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: at most ``attempts`` tries within ``deadline`` seconds."""

    attempts: int = 4
    base: float = 0.2
    cap: float = 3.0
    deadline: float = 15.0
    #: a Retry-After longer than this is not waited for: the caller journals instead
    max_retry_after: float = 10.0

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with equal jitter (never 0, never in lock-step)."""
        ceiling = min(self.cap, self.base * (2 ** attempt))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(frozen=True)
class ResourcePath:
    """What a REST path names, for messages: ``patch pods "x" in namespace "ns"``."""

    group: str
    version: str
    resource: str
    namespace: str = ""
    name: str = ""
    subresource: str = ""

    def url(self) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespace:
            base += f"/namespaces/{quote(self.namespace, safe='')}"
        base += f"/{self.resource}"
        if self.name:
            base += f"/{quote(self.name, safe='')}"
        if self.subresource:
            base += f"/{self.subresource}"
        return base

    def describe(self) -> str:
        what = self.resource + (f".{self.group}" if self.group else "")
        if self.subresource:
            what += f"/{self.subresource}"
        if self.name:
            what += f' "{self.name}"'
        if self.namespace:
            what += f' in namespace "{self.namespace}"'
        return what

    def verb(self, method: str) -> str:
        if method == "GET":
            return "get" if self.name else "list"
        return _VERBS.get(method, method.lower())


class KubeClient:
    """Thread-safe JSON client on one connection pool; counts its requests."""

    def __init__(self, connection: Connection, retry: RetryPolicy | None = None,
                 timeout: tuple[float, float] = (5.0, 30.0)) -> None:
        self.connection = connection
        self.host = connection.host
        self._pool = connection.pool
        self.retry = retry or RetryPolicy()
        self.timeout = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        self.user_agent = "kidecar/0.1"
        self._lock = threading.Lock()
        self.requests = 0  # HTTP requests sent, retries included (for benchmarks)
        self._forbidden_logged: set[tuple[str, str]] = set()
        #: resources whose 401/403 the caller reports itself (not logged here)
        self.forbidden_quiet: set[str] = set()
        self._on_answer: list[Callable[[], None]] = []
        self._discovery: dict[tuple[str, str], dict[str, bool]] = {}
        self._discovery_lock = threading.Lock()

    # -- construction ------------------------------------------------------------
    @classmethod
    def from_environment(cls, kubeconfig: str | None = None,
                         service_account_dir: str = SERVICE_ACCOUNT_DIR,
                         **kwargs: Any) -> KubeClient:
        """In-cluster (ServiceAccount token) in a pod, else ``kubeconfig``/``$KUBECONFIG``."""
        try:
            connection = kube_connection.from_environment(kubeconfig, service_account_dir)
        except KubeConfigError as exc:
            raise KubeError(str(exc)) from exc
        log.info("Kubernetes API %s via %s", connection.host, connection.source)
        return cls(connection, **kwargs)

    def on_answer(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever the API answers (it is reachable again)."""
        self._on_answer.append(callback)

    def close(self) -> None:
        self._pool.clear()

    # -- verbs -------------------------------------------------------------------
    def get(self, path: ResourcePath, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def create(self, path: ResourcePath, body: Any, **kw: Any) -> Any:
        return self.request("POST", path, body=body, **kw)

    def merge_patch(self, path: ResourcePath, patch: Any, **kw: Any) -> Any:
        return self.request("PATCH", path, body=patch, content_type=MERGE_PATCH, **kw)

    def json_patch(self, path: ResourcePath, ops: list[dict[str, Any]], **kw: Any) -> Any:
        return self.request("PATCH", path, body=ops, content_type=JSON_PATCH, **kw)

    def resources(self, group: str, version: str) -> dict[str, bool]:
        """Discovery: resource name → namespaced, for group/version (cached)."""
        key = (group, version)
        with self._discovery_lock:  # single flight: a burst of first uses asks once
            cached = self._discovery.get(key)
            if cached is not None:
                return cached
            url = f"/api/{version}" if not group else f"/apis/{group}/{version}"
            what = ResourcePath(group, version, "")
            body = self._send("GET", url, what, None, None, None, self.retry,
                              f"discovery of {url}")
            found = {r["name"]: bool(r.get("namespaced"))
                     for r in (body or {}).get("resources", [])
                     if isinstance(r, dict) and "name" in r}
            self._discovery[key] = found
            return found

    def request(self, method: str, path: ResourcePath, body: Any = None,
                content_type: str | None = None, query: dict[str, str] | None = None,
                retry: RetryPolicy | None = None, raw: bool = False) -> Any:
        """Send one API request with retries; the parsed JSON answer (bytes if ``raw``)."""
        url = path.url()
        if query:
            url += "?" + urlencode(query)
        return self._send(method, url, path, body, content_type, raw, retry or self.retry, None)

    # -- internals ---------------------------------------------------------------
    def _send(self, method: str, url: str, path: ResourcePath, body: Any,
              content_type: str | None, raw: bool | None, retry: RetryPolicy,
              label: str | None) -> Any:
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        started = time.monotonic()
        attempt = 0
        refreshed = False
        while True:
            try:
                status, data, headers = self._once(method, url, payload, content_type)
            except urllib3.exceptions.HTTPError as exc:
                error: KubeError = KubeUnavailable(
                    f"{path.verb(method)} {path.describe()}: API server unreachable: "
                    f"{_short(exc)}")
            else:
                if 200 <= status < 300:
                    self._answered()
                    if raw:
                        return data
                    return json.loads(data) if data else None
                if status == 401 and not refreshed and self._refresh():
                    refreshed = True  # a rotated token: one more try at once
                    continue
                error = self._error(method, path, status, data, headers, label)
                if not isinstance(error, KubeUnavailable):
                    self._answered()
                    raise error
            attempt += 1
            wait = retry.backoff(attempt - 1)
            if error.retry_after is not None:
                if error.retry_after > retry.max_retry_after:
                    raise error
                wait = max(wait, error.retry_after)
            if attempt >= retry.attempts or time.monotonic() - started + wait > retry.deadline:
                raise error
            log.debug("%s; retry %d in %.2fs", error, attempt, wait)
            time.sleep(wait)

    def _once(self, method: str, url: str, payload: bytes | None,
              content_type: str | None) -> tuple[int, bytes, Any]:
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        if payload is not None:
            headers["Content-Type"] = content_type or "application/json"
        headers.update(self._auth_headers())
        with self._lock:
            self.requests += 1
        resp = self._pool.request(method, self.host + url, body=payload, headers=headers,
                                  timeout=self.timeout, retries=False, preload_content=True)
        return resp.status, resp.data, resp.headers

    def _auth_headers(self) -> dict[str, str]:
        try:
            return self.connection.auth()
        except KubeConfigError as exc:  # e.g. the token file vanished: retry later
            raise KubeForbidden(f"no credentials: {exc}", 401) from exc

    def _refresh(self) -> bool:
        try:
            return self.connection.refresh()
        except KubeConfigError:
            return False

    def _answered(self) -> None:
        for callback in list(self._on_answer):
            try:
                callback()
            except Exception:  # noqa: BLE001 - a hook must never break a request
                log.exception("on_answer hook failed")

    def _error(self, method: str, path: ResourcePath, status: int, data: bytes, headers: Any,
               label: str | None) -> KubeError:
        reason, message = _status_of(data)
        what = label or f"{path.verb(method)} {path.describe()}"
        text = f"{what}: {status} {reason or ''} {message}".rstrip()
        retry_after = _retry_after(headers)
        if status == 429 or status >= 500:
            return KubeUnavailable(text, status, reason, retry_after)
        if status in (401, 403):
            self._log_forbidden(method, path, status, message)
            return KubeForbidden(text, status, reason)
        if status == 404:
            return KubeNotFound(text, status, reason)
        if status == 409:
            return KubeConflict(text, status, reason)
        return KubeInvalid(text, status, reason)

    def _log_forbidden(self, method: str, path: ResourcePath, status: int, message: str) -> None:
        verb = path.verb(method)
        resource = path.resource + (f".{path.group}" if path.group else "")
        key = (verb, f"{resource}/{path.namespace}")
        if path.resource in self.forbidden_quiet and status == 403:
            return
        with self._lock:
            if key in self._forbidden_logged:
                log.debug("still forbidden: %s %s: %s", verb, resource, message)
                return
            self._forbidden_logged.add(key)
        where = f' in namespace "{path.namespace}"' if path.namespace else " (cluster scope)"
        if status == 401:
            log.error("Kubernetes API rejected the sidecar's credentials (401) for %s %s%s: %s",
                      verb, resource, where, message)
            return
        log.error("RBAC: the sidecar may not %s %s%s; grant verb %r on resource %r "
                  "(apiGroup %r) to its ServiceAccount (see config/rbac.yaml). API said: %s",
                  verb, resource, where, verb, path.resource, path.group, message)


def _status_of(data: bytes) -> tuple[str, str]:
    """(reason, message) of a Kubernetes Status body, or of whatever came back."""
    try:
        body = json.loads(data)
    except ValueError:
        return "", data[:300].decode("utf-8", "replace").strip()
    if isinstance(body, dict):
        return str(body.get("reason", "")), str(body.get("message", ""))
    return "", str(body)[:300]


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _short(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc)[:300]
