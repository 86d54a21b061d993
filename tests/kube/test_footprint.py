"""The production sidecar tree stays within its memory limit (issue 16).

A real ``kidecar run``, started as the image starts it (``python -OO -m
kidecar_supervisor run``: tests/support/sidecar_process.py), reaches the real
API server the way a pod does (the
ServiceAccount's token and CA at /var/run/secrets/kubernetes.io/serviceaccount
in a private mount namespace, KUBERNETES_SERVICE_HOST/PORT; no kubeconfig),
runs the seeds' hot_update + http_probe on InKube storage probing every
second, does one hot update, then idles. The whole tree's PSS must stay within
64 MiB, half the seed's 128Mi budget: a limit, not a timing. The PSS checked is
the tree's PSS as in a pod, where nothing outside kidecar maps its pages: each
resident page of the tree counted once (tests/support/tree_pages.py). psutil's
PSS, printed beside it, divides libpython's pages with the test runner's own
Python and whatever else runs, so it is lower and moves with the machine. The aim (48 MiB)
and the leak checks (100 updates, 10 minutes of probing) are the bench's
(bench/bench_footprint.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support import in_cluster
from tests.support.game_endpoint import GameEndpoint
from tests.support.sidecar_process import REPO, Sidecar, start_sidecar
from tests.support.tree_pages import own_mib
from tests.support.upstream_server import UpstreamServer

pytestmark = [pytest.mark.kube]

MIB = 1024 * 1024
LIMIT_PSS_MIB = 64.0
IDLE_SECONDS = 8.0


@pytest.fixture(scope="module")
def rbac(kube_env: Any) -> None:
    kube_env.apply_yaml(in_cluster.rbac_text(REPO, kube_env.namespace))


@pytest.fixture
def pod(kube_env: Any, rbac: None) -> str:
    name = f"footprint-{uuid.uuid4().hex[:8]}"
    for doc in in_cluster.pod_manifests(name):
        kube_env.apply_yaml(doc, namespace=kube_env.namespace)
    return name


@pytest.fixture
def game() -> Iterator[GameEndpoint]:
    endpoint = GameEndpoint()
    endpoint.set("/state.json", body='{"state": "idle"}', content_type="application/json")
    process = subprocess.Popen([sys.executable, "-c", in_cluster.GAME_PROCESS_CODE,
                                in_cluster.GAME_PROCESS])
    try:
        yield endpoint
    finally:
        process.kill()
        process.wait()
        endpoint.stop()


def tree_memory(root: int) -> list[tuple[int, float, float]]:
    """(pid, PSS MiB, USS MiB) of every process of ``root``'s tree."""
    out = []
    for proc in [psutil.Process(root), *psutil.Process(root).children(recursive=True)]:
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        out.append((proc.pid, info.pss / MIB, info.uss / MIB))
    return out


def roles(sidecar: Sidecar) -> dict[int, str]:
    names = {sidecar.proc.pid: "supervisor"}
    for entry in sidecar.get("/plugins").json():
        if entry.get("pid"):
            names[int(entry["pid"])] = entry["name"]
    return names


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="the ServiceAccount files at the pod's path need root and unshare(1)")
def test_idle_production_tree_stays_within_64_mib_pss(
    kube_env: Any, pod: str, game: GameEndpoint, tmp_path: Path
) -> None:
    files = in_cluster.service_account_files(tmp_path / "sa", kube_env.sidecar_token,
                                             kube_env.ca_file, kube_env.namespace)
    config = in_cluster.production_config(tmp_path / "files", game.url("/state.json"),
                                          kube_env.namespace)
    env = in_cluster.in_cluster_env(kube_env.server, pod, kube_env.namespace)
    with UpstreamServer() as upstream:
        url = upstream.add_file("v1.bin", os.urandom(MIB))
        sidecar = start_sidecar(config, tmp_path, env=env, wait_ready=True, timeout=60,
                                prefix=in_cluster.pod_prefix(files))
        try:
            answer = sidecar.post("/hot-update", data={"version": "v1", "url": url},
                                  timeout=120)
            assert answer.status_code == 200, answer.text
            # written through the in-cluster ServiceAccount, not journaled
            assert answer.json()["recorded"] == "written", answer.json()
            probes = game.request_count("/state.json")
            time.sleep(IDLE_SECONDS)
            assert game.request_count("/state.json") >= probes + IDLE_SECONDS / 2
            names = roles(sidecar)
            memory = tree_memory(sidecar.proc.pid)
            own = own_mib(pid for pid, _, _ in memory)
        finally:
            assert sidecar.stop() == 0
    assert len(memory) == 4, memory  # supervisor, http (with the store), hot_update, http_probe
    total = sum(pss for _, pss, _ in memory)
    detail = ", ".join(f"{names.get(pid, pid)} {pss:.1f}/{uss:.1f}" for pid, pss, uss in memory)
    print(f"production tree: {own:.1f} MiB as in a pod (its own pages), PSS here {total:.1f} "
          f"MiB (PSS/USS by process: {detail})")
    assert own >= total - 0.5, (own, total)  # a page of the tree counts once, never less
    assert own <= LIMIT_PSS_MIB, (
        f"the idle production tree uses {own:.1f} MiB as in a pod (PSS here {total:.1f}), "
        f"over the {LIMIT_PSS_MIB:g} MiB limit; PSS/USS by process: {detail}")
