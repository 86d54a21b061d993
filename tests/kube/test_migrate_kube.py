"""The Go kidecar's documents against a real kube-apiserver (issue 13): a ``podOwner``
target writes the pod's controlling owner, and ``kidecar migrate`` output is created
by the API server as it stands."""

from __future__ import annotations

import pytest

from kidecar_supervisor.storage.base import WRITTEN, MarkerUpdate, StorageConfig, TargetRef
from kidecar_supervisor.storage.targets import TargetError
from tests.support.inkube_support import Admin, store, uid


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
