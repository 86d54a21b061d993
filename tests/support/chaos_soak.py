"""The chaos soak (issue 14 §1): a real kidecar on a private real kube-apiserver with
hot_update (confirmed), http_probe and file_sync and a real game, under traffic and
random faults for as long as asked; then invariants against the API server and disk.

Run by ``bench/chaos --minutes 30`` and (a ~3-minute pass) by tests/soak/test_soak.py.

Threads: the main thread injects faults (so the apiserver restarted from it stays
tied to this process's life); one thread sends hot updates, one flips the game's
probed state, one watches /healthz and the game's file. Randomness is seeded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import requests
import yaml

from kidecar_supervisor.config_reader import ConfigReader
from kidecar_supervisor.plugin_api import PodIdentity
from kidecar_supervisor.storage.base import StorageConfig
from kidecar_supervisor.storage.inkube import InKubeStore
from tests.support.chaos_ledger import Ledger, Request
from tests.support.fake_game import FakeGame
from tests.support.game_endpoint import GameEndpoint
from tests.support.sidecar_process import REPO, Sidecar, free_port, start_sidecar
from tests.support.upstream_server import UpstreamServer
from tools import kube_env as ke

RESULT_KEY = "kidecar.soak/hot-update"
PROBE_KEY = "kidecar.soak/probe-state"
SYNC_KEY = "kidecar.soak/file-sync"
GSS = "soak-gss"
GS = ("game.kruise.io", "v1alpha1")
#: probed state -> GameServer spec.opsState (the seed's marker policies)
OPS_STATES = {"None": "None", "Allocated": "Allocated", "WaitToBeDeleted": "WaitToBeDeleted"}
FAULT_KINDS = ("kill-http", "kill-hot_update", "kill-http_probe",
               "kill-file_sync", "kill-supervisor", "apiserver-outage", "game-sigstop",
               "state-dir-full")
#: (kind, weight) of the hot-update traffic
REQUEST_KINDS = (("good", 6), ("game-refuses", 1), ("bad-checksum", 2), ("upstream-500", 2),
                 ("upstream-stall", 1), ("duplicate", 2), ("repeat", 1), ("big-body", 1), ("slow-client", 1))
STATE_DIR_BYTES = 32 * 1024 * 1024
#: how far past its deadline the fault loop may go to inject a kind not yet seen
OVERTIME = 180.0


@dataclass
class SoakOptions:
    minutes: float = 3.0
    seed: int = 0
    workdir: Path | None = None
    fault_gap: tuple[float, float] = (3.0, 8.0)
    log: Any = print


class Soak:
    """One soak run; ``run()`` returns the ledger (violations inside)."""

    def __init__(self, opts: SoakOptions) -> None:
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.ledger = Ledger()
        self.stop_event = threading.Event()
        self.tmp = Path(opts.workdir or tempfile.mkdtemp(prefix="kidecar-chaos-"))
        self.kube_dir = self.tmp / "kube"
        self.state_dir = self.tmp / "state"
        self.file_dir = self.tmp / "shared" / "game"
        self.sync_src = self.tmp / "image-files"
        self.sync_dst = self.tmp / "shared" / "synced"
        self.versions: dict[str, bytes] = {}
        self.counter = 0
        self.probe_state = "None"
        self.tree: set[int] = set()
        self.tmpfs = False
        self.sidecar: Sidecar | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.supervisor_down = threading.Event()
        self.supervisor_kills = 0
        self.game: FakeGame | None = None
        self.health: Counter[str] = Counter()
        self.health_max = 0.0

    # ------------------------------------------------------------------ setup
    def _log(self, text: str) -> None:
        self.opts.log(f"[chaos {time.monotonic() - self.ledger.started:6.1f}s] {text}")

    def _setup_kube(self) -> None:
        self.env = ke.up(self.kube_dir, tie_to_parent=True)
        rbac = (REPO / "config" / "rbac.yaml").read_text()
        ns = self.env["namespace"]
        ke.apply_yaml(self.kube_dir, rbac.replace("${POD_NAMESPACE}", ns)
                      .replace("${RESULT_NAMESPACE}", ns))
        from kubernetes import client

        api = ke.admin_api_client(self.kube_dir, as_admin=True)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.ns = ns
        self.pod = f"soak-{uuid.uuid4().hex[:6]}"
        manifest: Any = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": self.pod, "labels": {"game.kruise.io/owner-gss": GSS}},
            "spec": {"containers": [{"name": "game", "image": "game:1"},
                                    {"name": "kidecar", "image": "kidecar:1"}]}}
        self.core.create_namespaced_pod(ns, manifest)
        self.custom.create_namespaced_custom_object(*GS, ns, "gameservers", {
            "apiVersion": "game.kruise.io/v1alpha1", "kind": "GameServer",
            "metadata": {"name": self.pod}, "spec": {"opsState": "None"}})

    def _setup_disk(self) -> None:
        for d in (self.state_dir, self.file_dir, self.sync_src / "lua", self.sync_dst):
            d.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={STATE_DIR_BYTES}",
                                   "kidecar-chaos", str(self.state_dir)], capture_output=True)
            self.tmpfs = done.returncode == 0
        if not self.tmpfs:
            self.ledger.note("state dir is not a tmpfs (not root?): no state-dir-full faults")
        self.versions["v0"] = json.dumps({"version": "v0"}).encode()
        (self.file_dir / "index.html").write_bytes(self.versions["v0"])
        (self.sync_src / "assets.txt").write_text("bundled assets 1\n")
        (self.sync_src / "lua" / "init.lua").write_text("return 1\n")

    def _config(self) -> dict[str, Any]:
        assert self.game is not None
        store = {"type": "InKube", "inKube": {
            "annotationKey": RESULT_KEY,
            "resultConfigMap": {"name": "sidecar-result", "namespace": self.ns}}}
        reload = {"loadPatchType": "signal",
                  "signal": {"processName": self.game.tag, "signalName": "SIGHUP"}}
        policies = [{"state": s, "gameServerOpsState": o} for s, o in OPS_STATES.items()]
        return {"restartPolicy": "Always", "maxRestarts": 40, "plugins": [
            {"name": "hot_update", "bootOrder": 0, "config": {
                **reload, "fileDir": str(self.file_dir), "downloadTimeoutSeconds": 3,
                "confirm": {"http": {"url": self.game.version_url, "jsonPath": "$.version"},
                            "errorJsonPath": "$.lastReloadError", "timeoutSeconds": 4,
                            "intervalSeconds": 0.2},
                "keepVersions": 3, "storageConfig": store}},
            {"name": "http_probe", "bootOrder": 1, "config": {
                "startDelaySeconds": 0, "probeIntervalSeconds": 0.5, "endpoints": [{
                    "url": self.probe.url(), "timeout": 2, "storageConfig": {
                        "type": "InKube", "inKube": {"markerPolices": policies,
                                                     "annotationKey": PROBE_KEY}}}]}},
            {"name": "file_sync", "bootOrder": 2, "config": {
                **reload, "srcDir": str(self.sync_src), "dstDir": str(self.sync_dst),
                "version": "assets-1", "watch": {"enabled": False},
                "storageConfig": {"type": "InKube", "inKube": {
                    "annotationKey": SYNC_KEY,
                    "resultConfigMap": {"name": "sidecar-result", "namespace": self.ns}}}}},
        ]}

    def _start_sidecar(self) -> Sidecar:
        env = {"POD_NAME": self.pod, "POD_NAMESPACE": self.ns,
               "KUBECONFIG": self.env["sidecar_kubeconfig"]}
        sidecar = start_sidecar(self.config_path, self.tmp, env=env, port=self.port,
                                timeout=90)
        self.sidecar = sidecar
        self.tree |= sidecar.tree_pids()
        return sidecar

    def setup(self) -> None:
        self._log(f"seed {self.opts.seed}, workdir {self.tmp}")
        self._setup_disk()
        self._setup_kube()
        self.upstream = UpstreamServer().start()
        self.game = FakeGame(self.tmp, self.file_dir / "index.html", version_port=free_port())
        self.probe = GameEndpoint()
        self.probe.set("/", body=self.probe_state)
        self.config_path = self.tmp / "kidecar.yaml"
        self.config_path.write_text(yaml.safe_dump(self._config(), sort_keys=False))
        self._start_sidecar()
        first = self._update("good", self._new_version())
        if first.status != 200:
            raise RuntimeError(f"the first update did not succeed: {first.status} {first.body}")

    # ------------------------------------------------------------------ traffic
    def _new_version(self, **game_says: Any) -> str:
        """A new version's file on the upstream; ``game_says`` e.g. reject=why (a NACK)."""
        self.counter += 1
        version = f"v{self.counter}"
        data = json.dumps({"version": version, "pad": "x" * self.rng.randint(0, 4000),
                           **game_says}).encode()
        self.versions[version] = data
        self.upstream.add_file(f"{version}/index.html", data)
        return version

    def _post(self, kind: str, version: str, form: dict[str, str] | bytes,
              timeout: float = 60) -> Request:
        req = Request(kind=kind, version=version, sent=time.monotonic())
        try:
            response = requests.post(self.url + "/hot-update", data=form, timeout=timeout)
        except requests.RequestException as exc:
            req.outcome = type(exc).__name__
        else:
            req.status = response.status_code
            with contextlib.suppress(ValueError):
                body = response.json()
                req.body = body if isinstance(body, dict) else {}
            req.outcome = str(req.body.get("outcome") or req.body.get("status") or "")
        req.answered = time.monotonic()
        self.ledger.add(req)
        if req.status is not None and req.verdict == "unknown":
            self.ledger.note(f"{kind} {version} answered {req.status}: "
                             f"{str(req.body.get('error', ''))[:200]}")
        return req

    def _update(self, kind: str, version: str, **extra: str) -> Request:
        form = {"version": version,
                "url": self.upstream.url(f"files/{version}/index.html"), **extra}
        return self._post(kind, version, form)

    def _one_request(self, kind: str) -> None:
        if kind == "good":
            self._update(kind, self._new_version(),
                         sha256=hashlib.sha256(self.versions[f"v{self.counter}"]).hexdigest())
        elif kind == "game-refuses":
            self._update(kind, self._new_version(reject="the game refuses this build"))
        elif kind == "bad-checksum":
            self._update(kind, self._new_version(), sha256="0" * 64)
        elif kind == "upstream-500":
            version = self._new_version()
            self._post(kind, version, {"version": version,
                                       "url": self.upstream.url("status/500/index.html")})
        elif kind == "upstream-stall":
            version = self._new_version()
            self._post(kind, version, {"version": version, "url": self.upstream.url(
                "stall/index.html?after=100&length=100000")})
        elif kind == "duplicate":
            version = self._new_version()
            twins = [threading.Thread(target=self._update, args=(kind, version))
                     for _ in range(2)]
            for t in twins:
                t.start()
            for t in twins:
                t.join()
        elif kind == "repeat":
            last, _ = self.ledger.allowed_final_versions()
            if last is not None:
                self._update(kind, last)
        elif kind == "big-body":
            self._post(kind, "-", {"version": "big", "url": "x" * (3 << 20)})
        elif kind == "slow-client":
            self._slow_client()

    def _slow_client(self) -> None:
        """A client that trickles its request a byte a second; others must not notice."""
        req = Request(kind="slow-client", version="-", sent=time.monotonic())
        head = (b"POST /hot-update HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 40\r\n\r\n")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                sock.sendall(head)
                sock.settimeout(1.0)
                for _ in range(20):
                    if self.stop_event.is_set():
                        break
                    sock.sendall(b"v")
                    with contextlib.suppress(socket.timeout):
                        data = sock.recv(200)
                        req.outcome = (f"answered {data.split(b' ')[1].decode()}" if data
                                       else "closed by server")
                        break
                else:
                    req.outcome = "still open after 20 s"
        except OSError as exc:
            req.outcome = f"connection: {type(exc).__name__}"
        req.status = 0
        req.answered = time.monotonic()
        self.ledger.add(req)

    def _traffic(self) -> None:
        kinds, weights = zip(*REQUEST_KINDS, strict=True)
        while not self.stop_event.is_set():
            kind = self.rng.choices(kinds, weights)[0]
            if kind == "slow-client":
                threading.Thread(target=self._slow_client, daemon=True).start()
            else:
                self._one_request(kind)
            self.stop_event.wait(self.rng.uniform(0.5, 2.0))

    def _flipper(self) -> None:
        states = list(OPS_STATES)
        while not self.stop_event.wait(self.rng.uniform(3, 10)):
            self.probe_state = self.rng.choice(states)
            self.probe.set("/", body=self.probe_state)

    def _monitor(self) -> None:
        """/healthz never 503 while no plugin is Failed; the game file is always one version."""
        while not self.stop_event.wait(0.5):
            self._poll_health()
            data = _read(self.file_dir / "index.html")
            known = set(self.versions.values())
            if data is not None and data not in known:
                self.ledger.violation(f"fileDir/index.html is no version's bytes "
                                      f"({len(data)} bytes: {data[:60]!r})")

    def _poll_health(self) -> None:
        """One /healthz poll, counted by answer; a 503 must come with a Failed plugin."""
        started, kills = time.monotonic(), self.supervisor_kills
        try:
            health = requests.get(self.url + "/healthz", timeout=3)
        except requests.RequestException:
            self.health["no answer"] += 1  # between a SIGKILL and the restart
            return
        self.health_max = max(self.health_max, time.monotonic() - started)
        if health.status_code == 503 and (kills != self.supervisor_kills
                                          or self.supervisor_down.is_set()):
            # the supervisor is dead: its orphaned HTTP process rightly says so
            self.health["503 (supervisor SIGKILLed)"] += 1
            return
        self.health[str(health.status_code)] += 1
        if health.status_code == 503:
            self._check_failed(health)

    def _check_failed(self, health: requests.Response) -> None:
        try:
            plugins = requests.get(self.url + "/plugins", timeout=3).json()
        except (requests.RequestException, ValueError) as exc:
            self.ledger.note(f"/healthz 503 ({health.text[:200]}); /plugins unreadable: {exc}")
            return
        failed = [p["name"] for p in plugins if p.get("state") == "Failed"]
        if not failed:
            self.ledger.violation(f"/healthz answered 503 while no plugin was Failed: "
                                  f"{health.text[:300]}")
        else:
            self.ledger.note(f"/healthz 503 with Failed plugins {failed}")

    # ------------------------------------------------------------------ faults
    def _child_pid(self, name: str) -> int | None:
        try:
            plugins = requests.get(self.url + "/plugins", timeout=3).json()
        except (requests.RequestException, ValueError):
            return None
        for p in plugins:
            if p.get("name") == name and p.get("state") == "Running" and p.get("pid"):
                return int(p["pid"])
        return None

    def _inject(self, kind: str) -> bool:
        """One fault; False when it could not be injected now (counted only when done)."""
        sidecar = self.sidecar
        assert sidecar is not None and self.game is not None
        if kind.startswith("kill-") and kind != "kill-supervisor":
            self.tree |= sidecar.tree_pids()
            pid = self._child_pid(kind[len("kill-"):])
            if pid is None:
                return False
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        elif kind == "kill-supervisor":
            self._kill_supervisor(sidecar)
        elif kind == "apiserver-outage":
            ke.stop_apiserver(self.kube_dir)
            self.stop_event.wait(self.rng.uniform(3, 12))
            ke.start_apiserver(self.kube_dir)
        elif kind == "game-sigstop":
            self.game.proc.send_signal(signal.SIGSTOP)
            self.stop_event.wait(self.rng.uniform(2, 10))
            self.game.proc.send_signal(signal.SIGCONT)
        elif kind == "state-dir-full":
            if not self.tmpfs:
                return False
            self._fill_state_dir(self.rng.uniform(3, 8))
        self.ledger.fault(kind)
        return True

    def _kill_supervisor(self, sidecar: Sidecar) -> None:
        """SIGKILL the whole supervisor; none of its children may outlive it, then restart."""
        pids = sidecar.tree_pids()
        self.tree |= pids
        self.supervisor_down.set()
        self.supervisor_kills += 1
        sidecar.proc.kill()
        sidecar.proc.wait()
        deadline = time.monotonic() + 20
        left = _alive(pids - {sidecar.proc.pid})
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = _alive(left)
        if left:
            self.ledger.violation(f"orphans {sorted(left)} still running 20 s after the "
                                  "supervisor was SIGKILLed")
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.stop_event.wait(self.rng.uniform(0.5, 3))
        self._start_sidecar()
        self.supervisor_down.clear()

    def _fill_state_dir(self, seconds: float) -> None:
        filler = self.state_dir / "chaos-filler"
        try:
            with open(filler, "wb") as out:
                block = b"\0" * (1 << 20)
                while True:
                    out.write(block)
                    out.flush()
        except OSError:
            pass
        try:
            self.stop_event.wait(seconds)
        finally:
            filler.unlink(missing_ok=True)

    # ------------------------------------------------------------------ the run
    def run(self) -> Ledger:
        try:
            self.setup()
            threads = [threading.Thread(target=t, daemon=True, name=t.__name__)
                       for t in (self._traffic, self._flipper, self._monitor)]
            for t in threads:
                t.start()
            self._fault_loop()
            self.stop_event.set()
            for t in threads:
                t.join(120)
            self._settle_and_check()
            for note in self.ledger.notes:
                self._log(f"note: {note}")
        finally:
            self.stop_event.set()
            self._teardown()
        return self.ledger

    def _fault_loop(self) -> None:
        """Faults at random gaps until the deadline, and past it (by at most
        ``OVERTIME``) until every kind was injected once: a slow machine stretches
        the run rather than leaving a fault untested."""
        end = time.monotonic() + self.opts.minutes * 60
        order: list[str] = []
        while True:
            time.sleep(self.rng.uniform(*self.opts.fault_gap))
            now = time.monotonic()
            missing = self.possible_faults() - set(self.ledger.faults)
            if now >= end + OVERTIME or (now >= end and not missing):
                break
            if now >= end:
                order = sorted(missing)
            if not order:
                order = list(FAULT_KINDS)
                self.rng.shuffle(order)
            kind = order.pop()
            if self._inject(kind):
                self._log(f"fault {kind}")
            else:
                order.insert(0, kind)

    def possible_faults(self) -> set[str]:
        """Every fault kind this machine can inject (the tmpfs one needs root)."""
        kinds = set(FAULT_KINDS)
        return kinds if self.tmpfs else kinds - {"state-dir-full"}

    # ------------------------------------------------------------------ invariants
    def _settle_and_check(self) -> None:
        sidecar = self.sidecar
        assert sidecar is not None and self.game is not None
        sidecar.wait_for(lambda: sidecar.get("/healthz", timeout=3).status_code == 200, 60,
                         what="/healthz after the chaos")
        last_ok, allowed = self.ledger.allowed_final_versions()
        refused = self.ledger.refused_versions()
        self._log(f"last 200: {last_ok}; allowed at the end: {sorted(allowed, key=_vkey)}")
        # first: a result kept in memory goes to the store (or its journal) when retried
        if not _wait(lambda: self._unrecorded() == [], 60):
            self.ledger.violation(f"hot_update results still unrecorded after 60 s: "
                                  f"{self._unrecorded()}")
        journal = self.state_dir / "kube-journal"
        _wait(lambda: not list(journal.glob("*.json")), 120)
        pending = sorted(journal.glob("*.json"))
        if pending:
            self.ledger.violation(f"journal not empty after 120 s: "
                                  f"{[_journal_summary(p) for p in pending[:5]]}")
        for sub in ("failed", "bad"):
            stuck = sorted(p.name for p in (journal / sub).glob("*")) if (
                journal / sub).is_dir() else []
            if stuck:
                self.ledger.violation(f"journal {sub}/ holds {stuck[:10]}")
        self._check_version("pod annotation", self._annotation_version(), allowed, refused)
        store_pod, store_workload = self._store_versions()
        self._check_version("result store (pod)", store_pod, allowed, refused)
        if store_workload not in allowed:
            self.ledger.note(f"result ConfigMaps at the end: {self._result_dump()}")
        self._check_version("result store (workload)", store_workload, allowed, refused)
        final = self._annotation_version()
        reported = _wait(lambda: self._game_version() == final and final, 30)
        if not reported:
            self.ledger.violation(f"the game reports {self._game_version()!r}, the pod {final!r}")
        self._check_file_dir(final)
        self._check_ops_state()
        self._check_synced()
        self._check_processes(sidecar)

    def _unrecorded(self) -> list[Any] | str:
        """What GET /hot-update lists as kept in memory, not yet in any store."""
        try:
            doc = requests.get(self.url + "/hot-update", timeout=5).json()
        except (requests.RequestException, ValueError) as exc:
            return f"GET /hot-update failed: {exc}"
        return list(doc.get("unrecorded") or [])

    def _check_version(self, where: str, version: str | None, allowed: set[str],
                       refused: set[str]) -> None:
        if version in allowed:
            return
        why = "a refused version" if version in refused else "not the last 200'd version"
        self.ledger.violation(f"{where} holds {version!r}: {why} (allowed {sorted(allowed)})")

    def _annotation_version(self) -> str | None:
        pod: Any = self.core.read_namespaced_pod(self.pod, self.ns)
        text = (pod.metadata.annotations or {}).get(RESULT_KEY)
        if not text:
            return None
        note = json.loads(text)
        if note.get("success"):
            return str(note.get("version"))
        return str((note.get("lastGood") or {}).get("version"))

    def _result_dump(self) -> str:
        """The result ConfigMaps' hot_update values, raw: for diagnosis only (the check
        itself reads through the store's API, which survives a layout change)."""
        found = []
        listed: Any = self.core.list_namespaced_config_map(self.ns)
        for cm in listed.items:
            name = str(cm.metadata.name)
            if name.startswith("sidecar-result"):
                found += [f"{name}[{k}]={v[:300]}"
                          for k, v in (cm.data or {}).items() if "hot_update" in k]
        return "; ".join(found)

    def _store_versions(self) -> tuple[str | None, str | None]:
        """Read back through the store's public API, from a fresh state dir (no local copy)."""
        cfg = StorageConfig.parse(ConfigReader({"type": "InKube", "inKube": {
            "annotationKey": RESULT_KEY,
            "resultConfigMap": {"name": "sidecar-result", "namespace": self.ns}}},
            "storageConfig"))
        reader_dir = Path(tempfile.mkdtemp(prefix="reader-", dir=self.tmp))
        store = InKubeStore(cfg, PodIdentity(self.pod, self.ns), reader_dir,
                            kubeconfig=self.env["admin_kubeconfig"])
        try:
            pod = store.latest_for_pod("hot_update")
            workload = store.latest_for_workload("hot_update")
        finally:
            store.close()
        return (pod.version if pod else None), (workload.version if workload else None)

    def _game_version(self) -> str | None:
        assert self.game is not None
        with contextlib.suppress(requests.RequestException, ValueError):
            return str(requests.get(self.game.version_url, timeout=3).json()["version"])
        return None

    def _check_file_dir(self, final: str | None) -> None:
        names = sorted(p.name for p in self.file_dir.iterdir())
        if names != ["index.html"]:
            self.ledger.violation(f"fileDir holds more than the game's files: {names}")
        data = _read(self.file_dir / "index.html")
        if final is not None and data != self.versions.get(final):
            self.ledger.violation(f"fileDir/index.html is not {final}'s bytes")

    def _check_ops_state(self) -> None:
        want = OPS_STATES[self.probe_state]

        def ops() -> str:
            gs: Any = self.custom.get_namespaced_custom_object(*GS, self.ns, "gameservers",
                                                               self.pod)
            return str(gs["spec"].get("opsState"))

        if not _wait(lambda: ops() == want, 60):
            self.ledger.violation(f"GameServer opsState {ops()!r}, the game's last state "
                                  f"is {self.probe_state!r}")

    def _check_synced(self) -> None:
        for src in self.sync_src.rglob("*"):
            if src.is_file():
                dst = self.sync_dst / src.relative_to(self.sync_src)
                if _read(dst) != src.read_bytes():
                    self.ledger.violation(f"file_sync: {dst} differs from the image's file")

    def _check_processes(self, sidecar: Sidecar) -> None:
        pids = sidecar.tree_pids()
        self.tree |= pids
        zombies = [p for p in pids if _status(p) == psutil.STATUS_ZOMBIE]
        if zombies:
            time.sleep(2)
            zombies = [p for p in zombies if _status(p) == psutil.STATUS_ZOMBIE]
        if zombies:
            self.ledger.violation(f"zombies under the supervisor: {zombies}")
        code = sidecar.stop(60)
        self.sidecar = None
        if code != 0:
            self.ledger.violation(f"the supervisor exited {code} on SIGTERM")
        left = _alive(self.tree)
        if left:
            self.ledger.violation(f"processes left after the stop: {sorted(left)}")

    # ------------------------------------------------------------------ teardown
    def _teardown(self) -> None:
        if self.game is not None:
            with contextlib.suppress(ProcessLookupError):
                self.game.proc.send_signal(signal.SIGCONT)
        if self.sidecar is not None:
            with contextlib.suppress(Exception):
                self.sidecar.stop(30)
        for pid in _alive(self.tree):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for closer in ("game", "probe", "upstream"):
            obj = getattr(self, closer, None)
            if obj is not None:
                with contextlib.suppress(Exception):
                    obj.stop()
        with contextlib.suppress(Exception):
            ke.down(self.kube_dir)
        if self.tmpfs:
            subprocess.run(["umount", "-l", str(self.state_dir)], capture_output=True)

    def table(self) -> str:
        extra: dict[str, Any] = {
            "kidecar starts": 1 + self.ledger.faults.get("kill-supervisor", 0),
            "hot-update versions tried": self.counter}
        recorded = Counter(str(r.body.get("recorded", "not said (unchanged)")).split(":")[0]
                           for r in self.ledger.answered() if r.status == 200)
        for how, count in sorted(recorded.items()):
            extra[f"200 answers recorded: {how}"] = count
        for status, count in sorted(self.health.items()):
            extra[f"/healthz polls: {status}"] = count
        extra["/healthz slowest answer (ms)"] = round(self.health_max * 1000)
        return self.ledger.table(self.opts.seed, self.opts.minutes, extra)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _journal_summary(path: Path) -> str:
    """A journal entry in a line (the state dir is a tmpfs: gone after the run)."""
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return f"{path.name}: unreadable ({exc})"
    record = entry.get("record") or {}
    return (f"{path.name}: op={entry.get('op')} parts={entry.get('parts')} "
            f"plugin={record.get('plugin')} version={record.get('version')}")


def _status(pid: int) -> str | None:
    try:
        return str(psutil.Process(pid).status())
    except psutil.NoSuchProcess:
        return None


def _alive(pids: set[int]) -> set[int]:
    return {p for p in pids if _status(p) not in (None, psutil.STATUS_ZOMBIE)}


def _wait(predicate: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 - an API blip while settling is retried
            value = None
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(0.5)


def _vkey(version: str) -> int:
    return int(version[1:]) if version[1:].isdigit() else -1


def cleanup_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
