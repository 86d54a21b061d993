"""The Go kidecar's documents against a real kube-apiserver (issue 13): a ``podOwner``
target writes the pod's controlling owner, and ``kidecar migrate`` output is created
by the API server as it stands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kidecar_supervisor.config import parse_config_text
from kidecar_supervisor.storage.base import WRITTEN, MarkerUpdate, StorageConfig, TargetRef
from kidecar_supervisor.storage.targets import TargetError
from tests.support.inkube_support import Admin, store, uid

FIXTURE = Path(__file__).resolve().parents[1] / "support" / "fixtures" / "go-sidecarconfig.yaml"


@pytest.fixture
def admin(kube_env) -> Admin:
    return Admin(kube_env)


def test_pod_owner_target_writes_the_pods_controlling_owner(kube_env, admin, tmp_path):
    """``target: {podOwner: true}``: the GameServer that controls the pod, whatever its
    name (here not the pod's), not an object the rest of the target names."""
    ns, pod, owner = kube_env.namespace, uid("pod"), uid("owner")
    admin.pod(pod, ns, owner=("GameServer", owner))
    admin.gameserver(owner, ns, {"opsState": "None"})
    target = TargetRef(group="", version="", resource="", name="", pod_owner=True)
    cfg = StorageConfig(type="InKube", result_configmap=uid("res"), result_namespace=ns,
                        target=target, json_path="/spec/opsState")
    s = store(cfg, pod, ns, tmp_path, kube_env.admin_kubeconfig)
    try:
        assert s.apply_markers(MarkerUpdate(target_value="Maintaining")) == WRITTEN
        assert admin.get_gameserver(owner, ns)["spec"]["opsState"] == "Maintaining"
    finally:
        s.close()


def test_pod_owner_without_an_owner_is_a_clear_error(kube_env, admin, tmp_path):
    ns, pod = kube_env.namespace, uid("pod")
    admin.pod(pod, ns)
    target = TargetRef(group="", version="", resource="", name="", pod_owner=True)
    cfg = StorageConfig(type="InKube", result_configmap=uid("res"), result_namespace=ns,
                        target=target, json_path="/spec/opsState")
    s = store(cfg, pod, ns, tmp_path, kube_env.admin_kubeconfig)
    try:
        with pytest.raises(TargetError, match="no controlling owner"):
            s.apply_markers(MarkerUpdate(target_value="Maintaining"))
    finally:
        s.close()


@pytest.mark.kube
def test_migrate_output_is_created_by_the_api_server(kube_env, tmp_path):
    """`kidecar migrate -f` on a SidecarConfig: every object it prints is created as is
    (the SidecarSet by Kruise's CRD schema, nothing pruned), and its kidecar container,
    put into a Pod with the pod-level fields the note asks for, passes Pod validation."""
    ns, name = kube_env.namespace, uid("sc")
    text = FIXTURE.read_text().replace("namespace: default", f"namespace: {ns}") \
        .replace("name: hot-update-game", f"name: {name}")
    source = tmp_path / "sidecarconfig.yaml"
    source.write_text(text)
    result = subprocess.run([sys.executable, "-m", "kidecar_supervisor.cli", "migrate", "-f",
                             str(source), "--image", "kidecar:0.1.0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    printed = [d for d in yaml.safe_load_all(result.stdout) if d]
    stored = kube_env.apply_yaml(result.stdout)
    assert [o["kind"] for o in stored] == ["ConfigMap", "ServiceAccount", "SidecarSet"]
    configmap, account, sidecarset = stored
    assert configmap["metadata"]["namespace"] == ns and account["metadata"]["namespace"] == ns
    assert configmap["data"] == printed[0]["data"]
    assert sidecarset["spec"]["initContainers"] == printed[2]["spec"]["initContainers"]
    assert sidecarset["spec"]["selector"] == {"matchLabels": {"app": "hot-update-game"}}
    assert parse_config_text(configmap["data"]["config.yaml"], "stored").plugin("http_probe")

    kruise_only = ("podInjectPolicy", "shareVolumePolicy", "upgradeStrategy")
    container = {k: v for k, v in sidecarset["spec"]["initContainers"][0].items()
                 if k not in kruise_only}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": uid("pod")},
           "spec": {"shareProcessNamespace": True, "serviceAccountName": "kidecar-sa",
                    "initContainers": [container],
                    "containers": [{"name": "game", "image": "nginx:1.27"}],
                    "volumes": sidecarset["spec"]["volumes"]}}
    response = kube_env.session().post(f"{kube_env.server}/api/v1/namespaces/{ns}/pods",
                                       params={"dryRun": "All"}, json=pod, timeout=30)
    assert response.status_code == 201, response.text[:2000]
