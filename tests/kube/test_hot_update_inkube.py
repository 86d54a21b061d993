"""hot_update with the InKube store on a real kube-apiserver (kube_env).

The plugin runs in-process with a real InKubeStore (as the storage process
would hold it); the pod objects exist in the API server (no kubelet: they stay
Pending, which is all the store needs). Covers the acceptance of issue 4:
restart → re-apply before ready (from the pod annotation, with the container's
local state gone), a new pod of the same workload starts on its newest
version, another workload is never restored, failures land on the pod, and an
API outage journals the result, which appears once the API is back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kidecar_supervisor.config_reader import ConfigReader
from kidecar_supervisor.storage.base import StorageConfig
from tests.support.fake_game import FakeGame
from tests.support.hot_update_harness import PluginRun, signal_config, wait_until
from tests.support.inkube_support import Admin, store, uid
from tests.support.upstream_server import UpstreamServer, free_port

pytestmark = pytest.mark.kube

KEY = "sidecar.vke.volcengine.com/hot-update-result"
OLD = b"image default\n"
NEW = b"hot update v2\n"


@pytest.fixture
def admin(kube_env: Any) -> Admin:
    return Admin(kube_env)



class Cluster:
    """Pods of workloads in kube_env, and plugin runs whose store is InKube."""

    def __init__(self, kube_env: Any, admin: Admin, file_dir: Path, game: FakeGame,
                 tmp_path: Path) -> None:
        self.env = kube_env
        self.admin = admin
        self.ns = kube_env.namespace
        self.cm = uid("result")
        self.file_dir = file_dir
        self.game = game
        self.tmp = tmp_path

    def pod(self, gss: str) -> str:
        name = uid("gs")
        self.admin.pod(name, self.ns, labels={"game.kruise.io/owner-gss": gss})
        return name

    def run(self, pod: str, state: str, **extra: Any) -> PluginRun:
        cfg = signal_config(self.file_dir, self.game.tag, **extra)
        cfg["storageConfig"] = {"type": "InKube", "inKube": {
            "annotationKey": KEY, "resultConfigMap": {"name": self.cm, "namespace": self.ns}}}
        storage = StorageConfig.parse(ConfigReader(cfg["storageConfig"], "storageConfig"))
        state_dir = self.tmp / state
        inkube = store(storage, pod, self.ns, state_dir, self.env.admin_kubeconfig)
        return PluginRun(cfg, state_dir, pod=pod, namespace=self.ns, store=inkube)

    def annotation(self, pod: str) -> dict[str, Any] | None:
        text = (self.admin.get_pod(pod, self.ns)["metadata"].get("annotations") or {}).get(KEY)
        return json.loads(text) if text else None

    def reasons(self, pod: str) -> list[str]:
        return [e["reason"] for e in self.admin.events_for(pod, self.ns)]

    def lose_the_file(self) -> None:
        for entry in self.file_dir.iterdir():
            entry.unlink()
        (self.file_dir / "index.html").write_bytes(OLD)


@pytest.fixture
def cluster(kube_env: Any, admin: Admin, file_dir: Path, game: FakeGame,
            tmp_path: Path) -> Cluster:
    return Cluster(kube_env, admin, file_dir, game, tmp_path)


def test_result_and_recovery_across_pods_and_workloads(cluster: Cluster,
                                                        upstream: UpstreamServer) -> None:
    url = upstream.add_file("index.html", NEW)
    pod_a = cluster.pod("gss-one")
    with cluster.run(pod_a, "a1") as run:
        status, body = run.call({"version": "v2", "url": url})
        assert status == 200 and body["recorded"] == "written", body
    note = cluster.annotation(pod_a)
    assert note is not None and (note["version"], note["success"], note["url"]) == (
        "v2", True, url)
    assert "HotUpdateSucceeded" in cluster.reasons(pod_a)

    # the sidecar container restarts with its local state gone: the pod annotation
    # brings v2 back before the plugin is ready
    cluster.lose_the_file()
    with cluster.run(pod_a, "a2") as run:
        assert (cluster.file_dir / "index.html").read_bytes() == NEW
        restore = run.status()["restore"]
        assert (restore["state"], restore["scope"]) == ("applied", "pod")
    assert upstream.count("/files/index.html") == 2

    # a NEW pod of the same workload starts on the workload's newest version
    cluster.lose_the_file()
    pod_b = cluster.pod("gss-one")
    with cluster.run(pod_b, "b") as run:
        assert (cluster.file_dir / "index.html").read_bytes() == NEW
        assert run.status()["restore"]["scope"] == "workload"
    note_b = cluster.annotation(pod_b)
    assert note_b is not None and note_b["version"] == "v2" and note_b["success"] is True

    # a pod of another workload never gets it
    cluster.lose_the_file()
    pod_c = cluster.pod("gss-two")
    with cluster.run(pod_c, "c") as run:
        assert run.status()["restore"]["state"] == "nothing-recorded"
    assert (cluster.file_dir / "index.html").read_bytes() == OLD
    assert cluster.annotation(pod_c) is None
    assert upstream.count("/files/index.html") == 3


def test_failure_is_on_the_pod_and_keeps_last_good(cluster: Cluster,
                                                   upstream: UpstreamServer) -> None:
    url = upstream.add_file("index.html", NEW)
    pod = cluster.pod("gss-fail")
    with cluster.run(pod, "s") as run:
        assert run.call({"version": "v2", "url": url})[0] == 200
        status, body = run.call({"version": "v3", "url": upstream.url("status/404/index.html")})
        assert status == 502 and body["recorded"] == "written", body
    note = cluster.annotation(pod)
    assert note is not None
    assert (note["version"], note["success"]) == ("v3", False)
    assert "upstream answered 404" in note["message"]
    assert note["lastGood"]["version"] == "v2"
    assert "HotUpdateFailed" in cluster.reasons(pod)
    assert (cluster.file_dir / "index.html").read_bytes() == NEW


@pytest.mark.slow
def test_api_outage_update_happens_result_appears_later(cluster: Cluster,
                                                        upstream: UpstreamServer) -> None:
    url = upstream.add_file("index.html", NEW)
    pod = cluster.pod("gss-outage")
    with cluster.run(pod, "s") as run:
        assert run.call({"version": "v1", "url": upstream.add_file("v1.html", OLD)})[0] == 200
    with cluster.env.apiserver_outage():
        run = cluster.run(pod, "s").start()
        try:
            status, body = run.call({"version": "v2", "url": url})
            assert status == 200 and body["recorded"] == "journaled", body
            cluster.game.wait_for(lambda r: r["content"] == NEW.decode())
        finally:
            run.stop()
        # restarted while the API is still down: the journal brings v2 back before ready
        cluster.lose_the_file()
        with cluster.run(pod, "s") as again:
            assert (cluster.file_dir / "index.html").read_bytes() == NEW
            assert again.status()["version"] == "v2"
    # the API is back: a store on the same state dir replays the journal
    with cluster.run(pod, "s") as after:
        after.store.flush(60)
        wait_until(lambda: (cluster.annotation(pod) or {}).get("version") == "v2", timeout=60,
                   what="the journaled result on the pod")
        assert "HotUpdateSucceeded" in cluster.reasons(pod)


def test_a_full_result_configmap_says_which_parts_were_recorded(cluster: Cluster,
                                                                upstream: UpstreamServer) -> None:
    """Issue 17, finding 9: another tool filled the ConfigMap to 1 MiB with keys kidecar
    may not prune. The pod annotation and the Event are written; the reply says so
    instead of 'not recorded'."""
    from kidecar_supervisor.storage.result_shards import shard_index, shard_name

    limit = 1 << 20  # the API server's limit on the sum of a ConfigMap's values
    foreign = {f"other-tool-{i}": "x" * 1000 for i in range(1000)}
    foreign["other-tool-last"] = "y" * (limit - 1000 * 1000 - 20)
    pod = cluster.pod("gss-full")
    shard = shard_name(cluster.cm, shard_index(f"{cluster.ns}/{pod}"))  # the pod's shard
    cluster.admin.call("POST", f"/api/v1/namespaces/{cluster.ns}/configmaps",
                       {"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": shard, "namespace": cluster.ns},
                        "data": foreign})
    url = upstream.add_file("index.html", NEW)
    with cluster.run(pod, "s") as run:
        status, body = run.call({"version": "v2", "url": url})
        assert status == 200, body
        assert body["recorded"] == "partial", body
        assert body["recordedParts"] == {"pod": True, "store": False, "event": True}, body
        assert run.gauges["kidecar_hot_update_unrecorded_results"] == 0.0, \
            "a part refused for good is not retried"
    note = cluster.annotation(pod)
    assert note is not None and (note["version"], note["success"]) == ("v2", True)
    assert "HotUpdateSucceeded" in cluster.reasons(pod)
    stored = cluster.admin.configmap(shard, cluster.ns)
    assert stored is not None and set(stored["data"]) == set(foreign), \
        "nothing of the other tool's was pruned"


def confirmed_cluster(kube_env: Any, admin: Admin, tmp_path: Path,
                      game_dir: Path) -> tuple[Cluster, FakeGame]:
    """A Cluster whose game reports its version on /version (tests/support/fake_game.py)."""
    file_dir = game_dir
    (file_dir / "index.html").write_bytes(json.dumps({"version": "v1"}).encode())
    game = FakeGame(tmp_path, file_dir / "index.html", version_port=free_port())
    return Cluster(kube_env, admin, file_dir, game, tmp_path), game


def confirm(game: FakeGame, timeout: float) -> dict[str, Any]:
    return {"http": {"url": game.version_url, "jsonPath": "$.version"},
            "errorJsonPath": "$.lastReloadError", "timeoutSeconds": timeout,
            "intervalSeconds": 0.05}


def test_a_failed_rollback_is_a_warning_event_on_the_pod(kube_env: Any, admin: Admin,
                                                         tmp_path: Path, file_dir: Path,
                                                         upstream: UpstreamServer) -> None:
    """The game dies loading v5 and nobody restarts it: nothing confirmed runs (DESIGN §9)."""
    cluster, game = confirmed_cluster(kube_env, admin, tmp_path, file_dir)
    try:
        pod = cluster.pod("gss-failed")
        crash = upstream.add_file("v5/index.html", json.dumps({"version": "v5",
                                                                "crash": True}).encode())
        with cluster.run(pod, "s", confirm=confirm(game, 1)) as run:
            readiness: list[bool] = []
            run.ctx._ready_cb = readiness.append
            status, body = run.call({"version": "v5", "url": crash})
            assert status == 500 and body["outcome"] == "failed", body
            assert readiness[-1] is False
        note = cluster.annotation(pod)
        assert note is not None and (note["version"], note["success"]) == ("v5", False)
        assert "rollback" in note["message"]
        warnings = [e for e in admin.events_for(pod, cluster.ns)
                    if e["reason"] == "HotUpdateFailed" and e["type"] == "Warning"]
        assert any("could not be restored" in e["message"] for e in warnings), warnings
    finally:
        game.stop()


def test_a_secret_in_the_url_reaches_no_api_object(kube_env: Any, admin: Admin,
                                                   tmp_path: Path, file_dir: Path,
                                                   upstream: UpstreamServer) -> None:
    cluster, game = confirmed_cluster(kube_env, admin, tmp_path, file_dir)
    try:
        pod = cluster.pod("gss-secret")
        upstream.add_file("v2/index.html", json.dumps({"version": "v2"}).encode())
        url = upstream.url("files/v2/index.html").replace(
            "http://", "http://player:s3cr3tpass@") + "?token=TOPSECRETTOKEN"
        with cluster.run(pod, "s", confirm=confirm(game, 5)) as run:
            status, body = run.call({"version": "v2", "url": url})
            assert status == 200, body
            bad = url.replace("/v2/", "/missing/")
            assert run.call({"version": "v3", "url": bad})[0] == 502
        note = cluster.annotation(pod)
        assert note is not None and note["lastGood"]["version"] == "v2"
        objects = json.dumps([admin.get_pod(pod, cluster.ns),
                              admin.call("GET", f"/api/v1/namespaces/{cluster.ns}/configmaps"),
                              admin.events_for(pod, cluster.ns)])
        assert "127.0.0.1" in objects and "***" in objects  # the redacted URL is there
        for secret in ("s3cr3tpass", "TOPSECRETTOKEN", "player:"):
            assert secret not in objects
        # a restart with the file lost: restored from the kept copy, the URL is not needed
        cluster.lose_the_file()
        with cluster.run(pod, "s", confirm=confirm(game, 5)) as again:
            assert again.status()["restore"]["state"] == "applied"
            assert json.loads((file_dir / "index.html").read_bytes())["version"] == "v2"
    finally:
        game.stop()
