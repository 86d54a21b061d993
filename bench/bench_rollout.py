"""Fleet rollout cost (issue 11): real sidecars, then 1,000 pods in-process.

(i) ``kidecar rollout`` of a GameServerSet of real sidecars (``kidecar run`` +
fake game each, tests/kube/rollout_fleet.py) in batches of 25 %: the driver's
wall time against the sum of its parts (each pod's own update, by its
``kidecar_hot_update_last_duration_seconds``; and the critical path: per batch
its slowest pod, plus the driver's polling), and API requests per pod, driver
(user agent ``kidecar-rollout/0.1``) and sidecars (their ServiceAccount)
counted separately from the API server's audit log (each request once, by
auditID: a watch is one request however long it stays open).

(ii) the same rollout for 1,000 pods (quick: 200) where each pod's sidecar side
is the project's real code in this process: a ``PodWatch`` per pod (list +
watch of its own pod) and, when its desired version arrives, the result
written by a real ``InKubeStore`` (pod annotation, result shard, Event). The
driver is the real ``kidecar rollout start --wait`` process: its wall time and
peak RSS (its VmHWM), API requests per pod, and etcd's database growth
per pod (``etcd_mvcc_db_total_size_in_use_in_bytes``).

Run alone: ``bench/run --only rollout [--quick]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DRIVER_AGENT = "kidecar-rollout/0.1"


def _requests(env_dir: Path, since: float, user: str | None = None,
              agent: str | None = None) -> int:
    """Distinct API requests (by auditID) received after ``since`` by user or agent."""
    from tools import kube_env as ke

    seen = set()
    for ev in ke.audit_events(env_dir, user=user, stage=None):
        if agent is not None and ev.get("userAgent") != agent:
            continue
        stamp = ev.get("requestReceivedTimestamp", "")
        if _epoch(stamp) < since - 0.5:
            continue
        seen.add(ev.get("auditID"))
    return len(seen)


def _epoch(stamp: str) -> float:
    import calendar

    if not stamp:
        return 0.0
    whole, _, frac = stamp.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float(f"0.{frac or 0}")


def _etcd_in_use(env: dict[str, Any]) -> int:
    url = f"http://127.0.0.1:{env['etcd_client_port']}/metrics"
    for line in urllib.request.urlopen(url, timeout=10).read().decode().splitlines():
        if line.startswith("etcd_mvcc_db_total_size_in_use_in_bytes "):
            return int(float(line.split()[1]))
    raise RuntimeError("etcd reports no etcd_mvcc_db_total_size_in_use_in_bytes")


def _hwm_kib(pid: int) -> int:
    """VmHWM (peak RSS of the process's own address space, reset by exec) or 0 when gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _driver(env: dict[str, Any], *args: str) -> tuple[int, float, int, str]:
    """Run ``kidecar rollout ARGS --wait`` as admin: (exit code, seconds, peak RSS KiB, out).

    The peak is the driver's VmHWM, read every 0.1 s until it exits (wait4's ru_maxrss
    would report this benchmark's own RSS, which the forked child had before its exec).
    """
    argv = [sys.executable, "-m", "kidecar_supervisor.cli", "rollout", *args, "-n",
            env["namespace"], "--kubeconfig", env["admin_kubeconfig"], "--wait"]
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=str(REPO),
                                env=dict(os.environ, PYTHONPATH=str(REPO)))
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _hwm_kib(proc.pid))
            time.sleep(0.1)
        seconds = time.monotonic() - started
        out.seek(0)
        return proc.returncode, seconds, peak, out.read()


class _Env:
    """kube_env's handle (tests/support/kube_harness.KubeEnv) on a throw-away cluster."""

    def __init__(self) -> None:
        from tests.support.kube_harness import KubeEnv
        from tools import kube_env as ke

        self.ke = ke
        self.dir = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
        self.raw = ke.up(self.dir, tie_to_parent=True)
        self.handle = KubeEnv(self.dir, self.raw)

    def close(self) -> None:
        self.ke.down(self.dir)


# -- (i) real sidecars -------------------------------------------------------------------

def _metric(member: Any, name: str) -> float:
    text = member.sidecar.get("/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def real_sidecars_row(env: _Env, count: int) -> dict[str, str]:
    from tests.kube.rollout_fleet import Fleet, uid
    from tests.support.upstream_server import UpstreamServer

    with UpstreamServer() as upstream:
        fleet = Fleet(env.handle, env.dir / "fleet", upstream)
        try:
            gss = uid("bench")
            members = fleet.create(gss, count)
            since = time.time()
            code, seconds, rss, out = _driver(
                env.raw, "start", "bench-real", "--gameserverset", gss, "--version", "v2",
                "--url", fleet.urls["v2"], "--batch-size", "25%",
                "--batch-timeout-seconds", "120", "--poll-seconds", "0.5")
            if code != 0:
                raise RuntimeError(f"rollout exited {code}: {out[-2000:]}")
            driver_requests = _requests(env.dir, since, agent=DRIVER_AGENT)
            sidecar_requests = _requests(env.dir, since, user=env.raw["sidecar_user"])
            durations = {m.name: _metric(m, "kidecar_hot_update_last_duration_seconds")
                         for m in members}
            record = fleet.admin.configmap("kidecar-rollout-bench-real", fleet.ns)
            pods = json.loads(record["data"]["pods"])
        finally:
            fleet.stop()
    per_batch: dict[int, float] = {}
    for name, entry in pods.items():
        per_batch[entry[1]] = max(per_batch.get(entry[1], 0.0), durations.get(name, 0.0))
    serial = sum(durations.values())
    critical = sum(per_batch.values())
    return {
        "benchmark": f"rollout of {count} real sidecars (kidecar run + game each), 25 % batches",
        "kidecar": (f"{seconds:.1f} s wall; API requests per pod: driver "
                    f"{driver_requests / count:.1f}, sidecars {sidecar_requests / count:.1f}"),
        "peers": (f"sum of the pods' updates {serial:.1f} s (one after the other); critical "
                  f"path {critical:.1f} s ({len(per_batch)} batches, slowest pod each)"),
        "aim": "wall ≈ critical path + polling (0.5 s a pass); O(1) requests per pod",
        "notes": (f"driver peak RSS {rss / 1024:.0f} MiB; each update is download + "
                  f"SIGHUP + confirm on the game's /version (interval 0.2 s) + result "
                  f"written; the sidecars' watches were open before the rollout (a desired "
                  f"version reaches a sidecar as a watch event: no request); their count is "
                  f"the update's reads and result writes (annotation, shard, Event); "
                  f"requests from the audit log, each auditID once, during the rollout"),
    }


# -- memory: the seed plugins with the watch on -------------------------------------------

def seed_with_watch_row(env: _Env) -> dict[str, str]:
    """PSS of the seeds' tree (hot_update + http_probe) with InKube storage, so the storage
    process holds the API client and the desired-version watch of its pod; beside the same
    tree with the watch off, measured in the same run (what the watch costs)."""
    with_watch, how = _seed_footprint(env, "bench-seed-0", watch=True)
    without, _ = _seed_footprint(env, "bench-seed-1", watch=False)
    return {
        "benchmark": "idle tree PSS / USS, seed plugins hot_update + http_probe, InKube "
                     "storage with the desired-version watch",
        "kidecar": with_watch.text(),
        "peers": f"the same without the watch (desiredVersion.enabled false): {without.text()}",
        "aim": "PSS ≤ 64 MiB",
        "notes": (f"hot_update's storage is InKube on a real API server: the storage process "
                  f"holds the API client and one watch of its own pod; credentials: {how}. "
                  f"PSS/USS by process (MiB), with the watch: {with_watch.breakdown()}; "
                  f"without: {without.breakdown()}"),
    }


def _seed_footprint(env: _Env, name: str, watch: bool) -> tuple[Any, str]:
    sys.path.insert(0, str(REPO / "bench"))
    import bench_supervisor as bs

    from tests.kube.rollout_fleet import rbac_text
    from tests.support.inkube_support import Admin
    from tests.support.sidecar_process import start_sidecar

    ns = env.raw["namespace"]
    env.handle.apply_yaml(rbac_text(ns))
    work = env.dir / name
    config = bs.seed_plugins_config(work)
    hot = config["plugins"][0]["config"]
    hot["storageConfig"] = {"type": "InKube", "inKube": {
        "resultConfigMap": {"name": "sidecar-result", "namespace": ns}}}
    hot["desiredVersion"] = {"enabled": watch}
    Admin(env.handle).pod(name, ns, labels={"game.kruise.io/owner-gss": "bench-seed"})
    prefix, how = _in_cluster(env, work, name)
    if prefix is None:
        run_env = {"POD_NAME": name, "POD_NAMESPACE": ns,
                   "KUBECONFIG": env.raw["sidecar_kubeconfig"]}
    else:
        run_env = how
        how = "in-cluster ServiceAccount files (as in a pod: no kubernetes package)"
    sidecar = start_sidecar(config, work, env=run_env, wait_ready=True, timeout=60,
                            prefix=prefix)
    try:
        time.sleep(3.0)  # heartbeats, the watch open, the gunicorn worker warmed
        roles = {sidecar.proc.pid: "supervisor"}
        for entry in sidecar.get("/plugins").json():
            if entry.get("pid"):
                roles[int(entry["pid"])] = str(entry["name"])
        found = bs.footprint(sidecar.proc.pid, roles)
    finally:
        sidecar.stop()
    return found, how


def _in_cluster(env: _Env, work: Path, pod: str) -> tuple[list[str] | None, Any]:
    """(command prefix, env) that runs kidecar on in-cluster ServiceAccount files, like a
    pod (tests/support/in_cluster.py, needs root for a private mount namespace); else
    (None, why the kubeconfig is used instead)."""
    try:
        from tests.support import in_cluster
    except ImportError:
        return None, "kubeconfig (tests/support/in_cluster.py missing): +~20 MiB"
    if os.geteuid() != 0:
        return None, "kubeconfig (in-cluster files need root): +~20 MiB kubernetes package"
    files = in_cluster.service_account_files(work / "sa", env.raw["sidecar_token"],
                                             env.raw["ca_file"], env.raw["namespace"])
    return in_cluster.pod_prefix(files), in_cluster.in_cluster_env(
        env.raw["server"], pod, env.raw["namespace"])


# -- (ii) 1,000 pods in-process ------------------------------------------------------------

class _SimulatedPod:
    """One pod's sidecar side: the real PodWatch and, on a desired version, a real
    InKubeStore writing the confirmed result (the game itself is not simulated)."""

    def __init__(self, env: dict[str, Any], client: Any, name: str, state: Path) -> None:
        from kidecar_supervisor.storage.pod_watch import PodWatch

        self.env = env
        self.name = name
        self.state = state
        self.watch = PodWatch(client, env["namespace"], name)
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.stop = threading.Event()
        self.applied = ""

    def start(self) -> None:
        self.watch.start()
        self.thread.start()

    def _follow(self) -> None:
        revision = 0
        while not self.stop.is_set():
            snap = self.watch.wait("kidecar.io/desired-version", revision, 5.0)
            revision = snap.revision
            if not snap.value or snap.value == self.applied:
                continue
            self.applied = snap.value
            self._record(json.loads(snap.value))

    def _record(self, desired: dict[str, str]) -> None:
        from kidecar_supervisor.plugin_api import PodIdentity
        from kidecar_supervisor.storage.base import ResultRecord, StorageConfig
        from kidecar_supervisor.storage.inkube import InKubeStore

        ns = self.env["namespace"]
        env = {"POD_NAME": self.name, "POD_NAMESPACE": ns}
        store = InKubeStore(StorageConfig(type="InKube", result_namespace=ns),
                            PodIdentity(self.name, ns), self.state,
                            kubeconfig=self.env["sidecar_kubeconfig"], self_env=lambda: env)
        try:
            store.record_result(ResultRecord(plugin="hot_update", version=desired["version"],
                                             url=desired["url"], message="confirmed (bench)"))
        finally:
            store.close()


def thousand_pods_row(env: _Env, count: int) -> dict[str, str]:
    from kidecar_supervisor.rollout.spec import RESULT_ANNOTATION
    from kidecar_supervisor.storage.kube_api import KubeClient
    from tests.kube.rollout_fleet import rbac_text

    raw = env.raw
    ns = raw["namespace"]
    env.handle.apply_yaml(rbac_text(ns))
    admin = env.handle.session(as_admin=True)
    gss = "bench-k"
    previous = json.dumps({"plugin": "hot_update", "version": "v1", "success": True,
                           "url": "http://127.0.0.1:9/v1/pak", "timestamp": time.time()})

    def make(i: int) -> None:
        name = f"{gss}-{i}"
        for path, body in (
                (f"/api/v1/namespaces/{ns}/pods", {
                    "apiVersion": "v1", "kind": "Pod", "metadata": {
                        "name": name, "labels": {"game.kruise.io/owner-gss": gss},
                        "annotations": {RESULT_ANNOTATION: previous}},
                    "spec": {"containers": [{"name": "game", "image": "game:1"}]}}),
                (f"/apis/game.kruise.io/v1alpha1/namespaces/{ns}/gameservers", {
                    "apiVersion": "game.kruise.io/v1alpha1", "kind": "GameServer",
                    "metadata": {"name": name}, "spec": {"opsState": "None"}})):
            r = admin.post(raw["server"] + path, data=json.dumps(body),
                           headers={"Content-Type": "application/json"}, timeout=60)
            r.raise_for_status()

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(make, range(count)))
    client = KubeClient.from_environment(kubeconfig=raw["sidecar_kubeconfig"])
    states = Path(tempfile.mkdtemp(prefix="bench-pods-"))
    pods = [_SimulatedPod(raw, client, f"{gss}-{i}", states / str(i)) for i in range(count)]
    for pod in pods:
        pod.start()
    deadline = time.monotonic() + 300
    while not all(p.watch.wait("x", 0, 0).synced for p in pods):
        if time.monotonic() > deadline:
            raise RuntimeError("the pod watches did not sync within 300 s")
        time.sleep(0.5)
    before = _etcd_in_use(raw)
    since = time.time()
    try:
        code, seconds, rss, out = _driver(
            raw, "start", "bench-k", "--gameserverset", gss, "--version", "v2", "--url",
            "http://127.0.0.1:9/v2/pak", "--batch-size", "25%", "--batch-timeout-seconds",
            "300", "--poll-seconds", "1")
        if code != 0:
            raise RuntimeError(f"rollout exited {code}: {out[-2000:]}")
        driver_requests = _requests(env.dir, since, agent=DRIVER_AGENT)
        sidecar_requests = _requests(env.dir, since, user=raw["sidecar_user"])
        growth = _etcd_in_use(raw) - before
    finally:
        for pod in pods:
            pod.stop.set()
            pod.watch.stop()
    return {
        "benchmark": (f"rollout of {count} pods, 25 % batches; each pod's sidecar side is "
                      f"the real PodWatch + InKubeStore in-process"),
        "kidecar": (f"driver {seconds:.1f} s wall, peak RSS {rss / 1024:.0f} MiB; API requests "
                    f"per pod: driver {driver_requests / count:.2f}, sidecars "
                    f"{sidecar_requests / count:.2f}; etcd +{growth / count / 1024:.1f} KiB "
                    f"per pod"),
        "peers": "n/a",
        "aim": "O(1) requests and etcd bytes per pod; driver RSS flat in the fleet size",
        "notes": ("the driver lists pods and GameServers once per pass (1 s) and writes its "
                  "ConfigMap once per pass, so its requests per pod fall as batches grow; "
                  "sidecar requests: the desired-version watch event costs none, each "
                  "result is the pod annotation + shard + Event writes, plus the reads of a "
                  "store opened per result here (a real sidecar keeps its store open); etcd growth is "
                  "in-use bytes before/after the rollout (records + annotations + Events)"),
    }


def rows(quick: bool) -> list[dict[str, str]]:
    out = []
    env = _Env()
    try:
        out.append(seed_with_watch_row(env))
        out.append(real_sidecars_row(env, 8 if quick else 20))
    finally:
        env.close()
    env = _Env()  # a fresh cluster: the audit log and etcd hold only this rollout
    try:
        out.append(thousand_pods_row(env, 200 if quick else 1000))
    finally:
        env.close()
    return out


if __name__ == "__main__":
    for row in rows("--quick" in sys.argv):
        print(json.dumps(row))
