"""config/rollout-rbac.yaml and config/rollout-job.yaml in the real API server (issue 11).

Both are created as written (placeholders substituted); every API verb the
driver used in a real rollout (read from the audit log by its user agent) is
granted to the kidecar-rollout ServiceAccount, and what it does not need is not
(SubjectAccessReview, decided by the API server's own RBAC authorizer).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from kidecar_supervisor.rollout.commands import USER_AGENT
from tests.kube.rollout_fleet import uid
from tests.support.inkube_support import Admin
from tests.support.sidecar_process import REPO

pytestmark = pytest.mark.kube


def substituted(name: str, **values: str) -> str:
    text = (REPO / "config" / name).read_text()
    for key, value in values.items():
        text = text.replace("${" + key + "}", value)
    assert "${" not in "\n".join(line for line in text.splitlines()
                                 if not line.lstrip().startswith("#")), text
    return text


def allowed(admin: Admin, ns: str, verb: str, resource: str, group: str = "",
            namespace: str | None = None) -> bool:
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": f"system:serviceaccount:{ns}:kidecar-rollout",
                       "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}",
                                  "system:authenticated"],
                       "resourceAttributes": {"namespace": namespace or ns, "verb": verb,
                                              "group": group, "resource": resource}}}
    answer = admin.call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
    return bool(answer["status"].get("allowed"))


def test_rollout_manifests_are_created_and_grant_exactly_what_the_driver_uses(
        kube_env: Any) -> None:
    ns = kube_env.namespace
    admin = Admin(kube_env)
    rbac = kube_env.apply_yaml(substituted("rollout-rbac.yaml", POD_NAMESPACE=ns),
                               namespace=ns)
    assert [o["kind"] for o in rbac] == ["ServiceAccount", "Role", "RoleBinding"]
    name = uid("job")
    job = kube_env.apply_yaml(substituted(
        "rollout-job.yaml", POD_NAMESPACE=ns, ROLLOUT_NAME=name, GAMESERVERSET="battle",
        VERSION="42", URL="https://cdn.example.com/content/42/pak.bin"), namespace=ns)[0]
    assert job["kind"] == "Job"
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == "kidecar-rollout"
    command = pod_spec["containers"][0]["command"]
    assert command[:4] == ["kidecar", "rollout", "start", name] and "--wait" in command
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [1, 2, 3]

    # a real (small) rollout: one pod without a sidecar, so it times out and aborts,
    # which exercises every write the driver makes (record, desired, revert)
    gss = uid("gssm")
    pod = f"{gss}-0"
    admin.pod(pod, ns, labels={"game.kruise.io/owner-gss": gss})
    admin.gameserver(pod, ns, {"opsState": "None"})
    proc = subprocess.run(
        [sys.executable, "-m", "kidecar_supervisor.cli", "rollout", "start", uid("rm"), "-n",
         ns, "--gameserverset", gss, "--version", "v2", "--url", "http://127.0.0.1:9/v2",
         "--batch-timeout-seconds", "2", "--poll-seconds", "0.5", "--wait", "--kubeconfig",
         kube_env.admin_kubeconfig], capture_output=True, text=True, timeout=120,
        cwd=str(REPO))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no answer within 2s" in proc.stdout
    used = {(e["verb"], e["objectRef"].get("resource"), e["objectRef"].get("apiGroup", ""))
            for e in kube_env.audit_events() if e.get("userAgent") == USER_AGENT
            and "objectRef" in e}
    assert {("list", "pods", ""), ("patch", "pods", ""), ("list", "gameservers",
            "game.kruise.io"), ("create", "configmaps", ""), ("update", "configmaps", "")} <= used
    for verb, resource, group in sorted(used):
        assert allowed(admin, ns, verb, resource, group), (verb, resource, group)
    for verb, resource, group, where in [
            ("delete", "pods", "", None), ("create", "pods", "", None),
            ("get", "secrets", "", None), ("patch", "gameservers", "game.kruise.io", None),
            ("list", "pods", "", "default"), ("delete", "configmaps", "", None),
            ("create", "pods/exec", "", None)]:
        assert not allowed(admin, ns, verb, resource, group, where), (verb, resource, where)
