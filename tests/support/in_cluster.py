"""Run a real ``kidecar run`` the way a pod runs it: the in-cluster ServiceAccount.

In a pod kidecar reaches the API server through the kubelet-projected files
under ``/var/run/secrets/kubernetes.io/serviceaccount`` (``token``,
``ca.crt``, ``namespace``) and the ``KUBERNETES_SERVICE_HOST``/``_PORT`` env;
no kubeconfig, and so no kubernetes package (kube_connection.in_cluster).
Going through a kubeconfig instead loads the kubernetes package and measures
another process than the one in production (issue 16: 80 MiB against 74).

``pod_prefix`` gives the command prefix that puts the files at that exact
path for the sidecar only: a private mount namespace (``unshare -m``) with a
tmpfs over ``/run`` (``/var/run`` is a link to it), so the host's ``/run`` is
never touched and nothing is left behind. Needs root (CI runs as root).
``production_config`` is the seeds' hot_update + http_probe on InKube storage,
probing every second: the configuration the footprint test and bench measure.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
RESULT_CONFIGMAP = "sidecar-result"
#: the game process hot_update signals (found by its command line), and its code:
#: it takes SIGHUP (the reload) and sleeps
GAME_PROCESS = "kidecar-footprint-game"
GAME_PROCESS_CODE = ("import signal, time; signal.signal(signal.SIGHUP, lambda *_: None); "
                     "time.sleep(10 ** 6)")


def service_account_files(directory: Path, token: str, ca_file: str, namespace: str) -> Path:
    """The three files the kubelet projects into a pod, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "token").write_text(token)
    shutil.copyfile(ca_file, directory / "ca.crt")
    (directory / "namespace").write_text(namespace)
    return directory


def in_cluster_env(server: str, pod: str, namespace: str) -> dict[str, str]:
    """The env the kubelet gives a pod: the API service address and the downward API.

    ``KUBECONFIG`` is emptied so nothing points kidecar at a kubeconfig.
    """
    url = urlsplit(server)
    return {"KUBERNETES_SERVICE_HOST": url.hostname or "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(url.port or 443),
            "POD_NAME": pod, "POD_NAMESPACE": namespace, "KUBECONFIG": ""}


def pod_prefix(files: Path) -> list[str]:
    """A command prefix: the rest of the command sees ``files`` at the pod's path.

    ``exec`` keeps the pid: the Popen's pid is kidecar's supervisor itself.
    """
    script = (f"mount -t tmpfs -o mode=0755 kidecar-pod /run && "
              f"mkdir -p {SERVICE_ACCOUNT_DIR} && "
              f"cp {shlex.quote(str(files))}/token {shlex.quote(str(files))}/ca.crt "
              f"{shlex.quote(str(files))}/namespace {SERVICE_ACCOUNT_DIR}/ && "
              f'exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]


def rbac_text(repo: Path, namespace: str) -> str:
    """config/rbac.yaml for pods and results in ``namespace``."""
    text = (repo / "config" / "rbac.yaml").read_text()
    return text.replace("${POD_NAMESPACE}", namespace).replace("${RESULT_NAMESPACE}", namespace)


def production_config(file_dir: Path, probe_url: str, namespace: str,
                      game_process: str = GAME_PROCESS) -> dict[str, Any]:
    """The seeds' pair on InKube storage (config/sidecar-configmap.yaml), probing every 1 s.

    Results go to ``namespace`` (the RBAC of ``rbac_text``); the probe writes the
    pod's markers and the GameServer's opsState like the seed.
    """
    inkube = {"resultConfigMap": {"name": RESULT_CONFIGMAP, "namespace": namespace}}
    return {"plugins": [
        {"name": "hot_update", "bootOrder": 0, "config": {
            "loadPatchType": "signal", "fileDir": str(file_dir),
            "signal": {"processName": game_process, "signalName": "SIGHUP"},
            "storageConfig": {"type": "InKube", "inKube": {
                **inkube, "annotationKey": "sidecar.vke.volcengine.com/hot-update-result"}}}},
        {"name": "http_probe", "bootOrder": 1, "config": {
            "startDelaySeconds": 0, "probeIntervalSeconds": 1,
            "endpoints": [{
                "url": probe_url, "method": "GET", "timeout": 1, "expectedStatusCode": 200,
                "jsonPathConfig": {"jsonPath": "$.state", "fieldType": "string"},
                "storageConfig": {"type": "InKube", "inKube": {
                    **inkube, "annotationKey": "kidecar.io/game-state",
                    "target": {"group": "game.kruise.io", "version": "v1alpha1",
                               "resource": "gameservers", "name": "${SELF:POD_NAME}",
                               "namespace": "${SELF:POD_NAMESPACE}"},
                    "jsonPath": "/spec/opsState",
                    "markerPolicies": [
                        {"state": "idle", "gameServerOpsState": "None",
                         "labels": {"gameserver-idle": "true"}},
                        {"state": "allocated", "gameServerOpsState": "Allocated",
                         "labels": {"gameserver-idle": "false"}}]}}}]}},
    ]}


def pod_manifests(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The game pod and its GameServer (same name), as OKG creates them."""
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": {"game.kruise.io/owner-gss": "footprint"}},
           "spec": {"containers": [{"name": "game", "image": "game:1"}]}}
    gameserver = {"apiVersion": "game.kruise.io/v1alpha1", "kind": "GameServer",
                  "metadata": {"name": name}, "spec": {"opsState": "None"}}
    return pod, gameserver
