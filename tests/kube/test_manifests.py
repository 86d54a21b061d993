"""The shipped manifests in config/ are complete: the real API server creates every one,
the example pod template is a valid Pod, and its sidecar config passes `kidecar validate`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kidecar_supervisor.config import load_config

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config"
CONFIGMAP = CONFIG / "sidecar-configmap.yaml"
GSS = CONFIG / "gameserverset.yaml"
SIDECARSET = CONFIG / "sidecarset.yaml"
EXAMPLES = [CONFIGMAP, CONFIG / "file-sync.yaml", CONFIG / "hot-update-nginx.yaml"]


def _kidecar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kidecar_supervisor.cli", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def _one(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def _kidecar_container(spec: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in spec.get("initContainers", []) + spec["containers"]
                if c["name"] == "kidecar")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_sidecar_configs_pass_kidecar_validate(path: Path) -> None:
    result = _kidecar("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")


def test_gameserverset_wires_the_configmap_config_and_probes() -> None:
    config = load_config(CONFIGMAP)
    spec = _one(GSS)["spec"]["gameServerTemplate"]["spec"]
    kidecar = _kidecar_container(spec)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in kidecar["volumeMounts"]}
    # kidecar reads /opt/sidecar/config.yaml: the ConfigMap's key config.yaml, mounted there
    assert "config.yaml" in _one(CONFIGMAP)["data"]
    assert volumes[mounts["/opt/sidecar"]]["configMap"]["name"] == _one(CONFIGMAP)["metadata"]["name"]
    hot = config.plugin("hot_update")
    assert hot is not None and "emptyDir" in volumes[mounts[hot.config.file_dir]]
    game = next(c for c in spec["containers"] if c["name"] == "game")
    assert mounts[hot.config.file_dir] in {m["name"] for m in game["volumeMounts"]}
    assert spec["shareProcessNamespace"] is True and spec["serviceAccountName"] == "kidecar"
    assert kidecar["restartPolicy"] == "Always"  # sidecarStartOrder: Before
    assert kidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 5000}
    assert kidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 5000}
    assert kidecar["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in kidecar["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert kidecar["securityContext"]["capabilities"]["add"] == ["KILL"]


def test_sidecarset_hot_upgrade_with_exec_probes() -> None:
    container = _one(SIDECARSET)["spec"]["containers"][0]
    assert container["upgradeStrategy"]["upgradeType"] == "HotUpgrade"
    assert container["upgradeStrategy"]["hotUpgradeEmptyImage"]
    assert container["livenessProbe"]["exec"]["command"] == ["kidecar", "health"]
    assert container["readinessProbe"]["exec"]["command"] == ["kidecar", "health", "--ready"]
    assert {e["name"] for e in container["env"]} == {"POD_NAME", "POD_NAMESPACE"}
    # both containers of a hot upgrade share one state dir (DESIGN §7): an emptyDir
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["kidecar-state"] == "/var/lib/kidecar"
    volumes = {v["name"]: v for v in _one(SIDECARSET)["spec"]["volumes"]}
    assert "emptyDir" in volumes["kidecar-state"]


def _rbac(namespace: str) -> str:
    text = (CONFIG / "rbac.yaml").read_text()
    return text.replace("${POD_NAMESPACE}", namespace).replace("${RESULT_NAMESPACE}", namespace)


@pytest.mark.kube
def test_every_manifest_is_created_in_the_api_server(kube_env: Any) -> None:
    ns = kube_env.namespace
    stored = []
    for source in (_rbac(ns), CONFIGMAP, GSS, SIDECARSET):
        stored += kube_env.apply_yaml(source, namespace=ns)
    kinds = [o["kind"] for o in stored]
    assert kinds == ["ServiceAccount", "Role", "RoleBinding", "Role", "RoleBinding",
                     "ConfigMap", "GameServerSet", "SidecarSet"]
    configmap, gss, sidecarset = stored[-3:]
    assert configmap["data"] == _one(CONFIGMAP)["data"]
    # nothing pruned by the CRD schemas: what we wrote is what the server keeps
    assert gss["spec"]["gameServerTemplate"] == _one(GSS)["spec"]["gameServerTemplate"]
    assert sidecarset["spec"]["containers"][0]["upgradeStrategy"] == {
        "upgradeType": "HotUpgrade", "hotUpgradeEmptyImage": "kidecar:0.1.0-empty"}
    assert "namespace" not in sidecarset["metadata"]  # cluster-scoped


@pytest.mark.kube
def test_gameserverset_pod_template_is_a_valid_pod(kube_env: Any) -> None:
    """The CRD keeps pod templates unvalidated; a dry-run Pod gets full Pod validation."""
    spec = _one(GSS)["spec"]["gameServerTemplate"]["spec"]
    response = kube_env.session().post(
        f"{kube_env.server}/api/v1/namespaces/{kube_env.namespace}/pods",
        params={"dryRun": "All"}, timeout=30,
        json={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "gss-template"},
              "spec": spec})
    assert response.status_code == 201, response.text[:2000]
    pod = response.json()
    assert pod["spec"]["initContainers"][0]["restartPolicy"] == "Always"
    bad = {**spec, "volumes": [v for v in spec["volumes"] if v["name"] != "kidecar-shared"]}
    response = kube_env.session().post(
        f"{kube_env.server}/api/v1/namespaces/{kube_env.namespace}/pods",
        params={"dryRun": "All"}, timeout=30,
        json={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "gss-broken"},
              "spec": bad})
    assert response.status_code == 422 and "kidecar-shared" in response.text  # the check bites
