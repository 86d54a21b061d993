"""A fleet of real sidecars on the real API server, for the rollout tests (issue 11).

Each member is a pod object, a GameServer object, a fake game process (it
reports the version it loaded on /version and counts its reloads) and a real
``kidecar run`` (hot_update only, confirm on the game's /version, InKube
storage as the pod's ServiceAccount). Members start in parallel and begin on
v1 through their desired-version annotation (the desired version wins at
start), so every pod has a recorded previous version before a rollout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kidecar_supervisor.rollout.spec import DESIRED_ANNOTATION, RESULT_ANNOTATION
from tests.support.fake_game import FakeGame
from tests.support.inkube_support import Admin
from tests.support.sidecar_process import REPO, Sidecar, free_port, start_sidecar
from tests.support.upstream_server import UpstreamServer

GAME_FILE = "game.json"
VERSIONS = {"v1": {"version": "v1"}, "v2": {"version": "v2"},
            "v3": {"version": "v3", "reject": "v3 is not for this game"}}


def rbac_text(namespace: str) -> str:
    text = (REPO / "config" / "rbac.yaml").read_text()
    return text.replace("${POD_NAMESPACE}", namespace).replace("${RESULT_NAMESPACE}", namespace)


@dataclass
class Member:
    name: str
    gss: str
    dir: Path
    game: FakeGame
    sidecar: Sidecar | None = None

    def report(self) -> dict[str, Any]:
        return self.game.report() or {}

    def version(self) -> str | None:
        return self.report().get("version")

    def loads(self) -> int:
        """Reloads of the game (SIGHUPs the sidecar sent it)."""
        return int(self.report().get("hups") or 0)

    def loaded(self, version: str) -> int:
        """How many times the game loaded ``version`` (a rollback reloads too)."""
        return sum(1 for c in self.report().get("loads") or []
                   if f'"version": "{version}"' in (c or ""))


class Fleet:
    """Members in kube_env's namespace; URLs of the versions on a loopback server."""

    def __init__(self, kube_env: Any, root: Path, upstream: UpstreamServer) -> None:
        self.env = kube_env
        self.admin = Admin(kube_env)
        self.ns = kube_env.namespace
        self.root = root
        self.upstream = upstream
        self.members: dict[str, Member] = {}
        self.urls = {v: upstream.add_file(f"{v}/{GAME_FILE}", json.dumps(doc).encode())
                     for v, doc in VERSIONS.items()}
        kube_env.apply_yaml(rbac_text(self.ns))

    # -- members ---------------------------------------------------------------------
    def desired(self, version: str, rollout: str = "seed") -> str:
        return json.dumps({"version": version, "url": self.urls[version], "rollout": rollout},
                          sort_keys=True, separators=(",", ":"))

    def create(self, gss: str, count: int, version: str = "v1", first: int = 0,
               desired: bool = True) -> list[Member]:
        """Pod + GameServer + game for ``count`` members; sidecars started in parallel.

        ``desired=False``: the pod has no desired version (a new pod of the workload,
        made by its controller from the template): it restores what the store says.
        """
        made = [self._member(gss, f"{gss}-{i}", version if desired else None)
                for i in range(first, first + count)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(self.start, made))
        for member in made:
            member.game.wait_for(lambda r, v=version: r.get("version") == v, timeout=120)
            wait_until(lambda m=member: (self.result(m.name) or {}).get("version") == version,
                       60, f"the {version} result on {member.name}")
        return made

    def _member(self, gss: str, name: str, version: str | None) -> Member:
        home = self.root / name
        files = home / "files"
        files.mkdir(parents=True)
        (files / GAME_FILE).write_text(json.dumps({"version": "v0"}))
        self.admin.pod(name, self.ns, labels={"game.kruise.io/owner-gss": gss},
                       owner=("GameServer", name),
                       annotations={DESIRED_ANNOTATION: self.desired(version)}
                       if version else {})
        self.admin.gameserver(name, self.ns, {"opsState": "None"})
        game = FakeGame(home, files / GAME_FILE, version_port=free_port())
        member = Member(name, gss, home, game)
        self.members[name] = member
        return member

    def config(self, member: Member) -> dict[str, Any]:
        return {"plugins": [{"name": "hot_update", "config": {
            "loadPatchType": "signal",
            "signal": {"processName": member.game.tag, "signalName": "SIGHUP"},
            "fileDir": str(member.dir / "files"),
            "confirm": {"http": {"url": member.game.version_url, "jsonPath": "$.version"},
                        "errorJsonPath": "$.lastReloadError", "timeoutSeconds": 10,
                        "intervalSeconds": 0.2},
            "storageConfig": {"type": "InKube", "inKube": {
                "resultConfigMap": {"name": "sidecar-result", "namespace": self.ns}}}}}]}

    def start(self, member: Member) -> Sidecar:
        env = {"POD_NAME": member.name, "POD_NAMESPACE": self.ns,
               "KUBECONFIG": self.env.sidecar_kubeconfig}
        run_dir = member.dir / "run"
        run_dir.mkdir(exist_ok=True)
        member.sidecar = start_sidecar(self.config(member), run_dir, env=env, timeout=120)
        return member.sidecar

    def kill_sidecar(self, member: Member) -> None:
        """SIGKILL the whole sidecar tree (a container killed by the kubelet)."""
        assert member.sidecar is not None
        pids = member.sidecar.tree_pids()
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        member.sidecar.proc.wait(10)

    def stop(self) -> None:
        for member in self.members.values():
            if member.sidecar is not None and member.sidecar.proc.poll() is None:
                member.sidecar.stop()
            member.game.stop()

    # -- the API side ----------------------------------------------------------------
    def set_ops_state(self, name: str, state: str) -> None:
        self.admin.call("PATCH", f"/apis/game.kruise.io/v1alpha1/namespaces/{self.ns}/"
                                 f"gameservers/{name}", {"spec": {"opsState": state}},
                        content_type="application/merge-patch+json")

    def result(self, name: str) -> dict[str, Any] | None:
        notes = self.admin.get_pod(name, self.ns)["metadata"].get("annotations") or {}
        text = notes.get(RESULT_ANNOTATION)
        return json.loads(text) if text else None

    def desired_of(self, name: str) -> dict[str, Any] | None:
        notes = self.admin.get_pod(name, self.ns)["metadata"].get("annotations") or {}
        text = notes.get(DESIRED_ANNOTATION)
        return json.loads(text) if text else None

    def rollout(self, *args: str, wait: bool = True, **popen: Any) -> subprocess.Popen[str]:
        """``kidecar rollout ARGS -n NS --kubeconfig ADMIN`` as a process (the driver)."""
        argv = [sys.executable, "-m", "kidecar_supervisor.cli", "rollout", *args,
                "-n", self.ns, "--kubeconfig", self.env.admin_kubeconfig]
        if wait and args and args[0] == "start":
            argv.append("--wait")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, cwd=str(REPO), **popen)

    def rollout_ok(self, *args: str, timeout: float = 240) -> tuple[int, str]:
        proc = self.rollout(*args)
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out


def wait_until(predicate: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def uid(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:5]}"


@contextmanager
def running_fleet(kube_env: Any, directory: Path) -> Iterator[Fleet]:
    """A Fleet with its own loopback file server; every sidecar and game stopped after."""
    with UpstreamServer() as upstream:
        fleet = Fleet(kube_env, directory, upstream)
        try:
            yield fleet
        finally:
            fleet.stop()
