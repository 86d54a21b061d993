"""Helpers for the InKube store tests: objects created as admin on the real API server.

No controllers run in kube_env: pods stay Pending and ownerReferences/labels
are set by hand, which is all the store reads.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import requests

from kidecar_supervisor.plugin_api import PodIdentity
from kidecar_supervisor.storage.base import StorageConfig
from kidecar_supervisor.storage.inkube import InKubeStore


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


class Admin:
    """Plain REST calls as the cluster admin (to set up and to check what the store did)."""

    def __init__(self, kube_env: Any) -> None:
        self.env = kube_env
        self.s: requests.Session = kube_env.session(as_admin=True)
        self.server = kube_env.server

    def call(self, method: str, path: str, body: Any = None,
             content_type: str = "application/json", ok: tuple[int, ...] = (200, 201)) -> Any:
        r = self.s.request(method, self.server + path,
                           data=None if body is None else json.dumps(body),
                           headers={"Content-Type": content_type}, timeout=30)
        assert r.status_code in ok, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r.json() if r.content else None

    def ensure_namespace(self, name: str) -> None:
        self.call("POST", "/api/v1/namespaces",
                  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                  ok=(201, 409))

    def pod(self, name: str, namespace: str, labels: dict[str, str] | None = None,
            owner: tuple[str, str] | None = None, env: dict[str, str] | None = None,
            annotations: dict[str, str] | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels or {},
                                "annotations": annotations or {}}
        if owner:
            api = "game.kruise.io/v1alpha1" if owner[0] == "GameServer" else "apps/v1"
            meta["ownerReferences"] = [{"apiVersion": api, "kind": owner[0], "name": owner[1],
                                        "uid": str(uuid.uuid4()), "controller": True}]
        container = {"name": "game", "image": "game:1",
                     "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                "spec": {"containers": [container, {"name": "kidecar", "image": "kidecar:1"}]}}
        return self.call("POST", f"/api/v1/namespaces/{namespace}/pods", body)

    def get_pod(self, name: str, namespace: str) -> dict[str, Any]:
        return self.call("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")

    def gameserver(self, name: str, namespace: str, spec: dict[str, Any] | None = None) -> Any:
        body = {"apiVersion": "game.kruise.io/v1alpha1", "kind": "GameServer",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec or {}}
        return self.call("POST", f"/apis/game.kruise.io/v1alpha1/namespaces/{namespace}/"
                                 "gameservers", body)

    def get_gameserver(self, name: str, namespace: str) -> dict[str, Any]:
        return self.call("GET",
                         f"/apis/game.kruise.io/v1alpha1/namespaces/{namespace}/gameservers/{name}")

    def configmap(self, name: str, namespace: str) -> dict[str, Any] | None:
        r = self.s.get(f"{self.server}/api/v1/namespaces/{namespace}/configmaps/{name}",
                       timeout=30)
        if r.status_code == 404:
            return None
        assert r.status_code == 200, r.text
        return r.json()

    def delete_configmap(self, name: str, namespace: str) -> None:
        self.call("DELETE", f"/api/v1/namespaces/{namespace}/configmaps/{name}", ok=(200, 404))

    def events_for(self, pod_name: str, namespace: str) -> list[dict[str, Any]]:
        items = self.call("GET", f"/api/v1/namespaces/{namespace}/events?fieldSelector="
                                 f"involvedObject.name={pod_name}")["items"]
        return sorted(items, key=lambda e: e["metadata"]["creationTimestamp"])


def store(cfg: StorageConfig, pod: str, namespace: str, state_dir: Path, kubeconfig: str,
          self_env: dict[str, str] | None = None) -> InKubeStore:
    env = {"POD_NAME": pod, "POD_NAMESPACE": namespace, **(self_env or {})}
    return InKubeStore(cfg, PodIdentity(pod, namespace), state_dir, kubeconfig=kubeconfig,
                       self_env=lambda: env)
