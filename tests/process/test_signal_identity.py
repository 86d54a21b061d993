"""Who kidecar runs as, with real processes of different UIDs (issue 13 §4).

The seeds' GameServerSet runs nginx's master as root beside kidecar with
shareProcessNamespace. The kernel lets kidecar signal it only as the same UID or
with CAP_KILL, so kidecar runs the way `kidecar inject` renders it (docs/deploy.md):
root with every capability dropped but KILL, or the game's own UID when the game
declares one. Each case starts a real `kidecar run` under that identity (setpriv:
UIDs and capability sets as the kubelet would set them) beside a real game process,
and posts the seed's hot update. The bare image (no securityContext for kidecar at
all) runs as root with KIDECAR_KEEP_CAPABILITIES=KILL and drops the rest itself:
that case is started as plain root with only the variable, no setpriv. A kidecar
the kernel refuses (a non-root UID without CAP_KILL, or root keeping nothing)
gets a reply and a log line that say what the pod needs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.sidecar_process import Sidecar, start_sidecar
from tests.support.upstream_server import UpstreamServer

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv to run processes as other UIDs")

FAKE_GAME = Path(__file__).resolve().parents[1] / "support" / "fake_game.py"
IMAGE_UID = 65532
GAME_UID = 1000
#: how `kidecar inject` runs kidecar beside a root game: root, only CAP_KILL
ROOT_ONLY_KILL = ["setpriv", "--reuid=0", "--regid=0", "--clear-groups", "--inh-caps=-all",
                  "--bounding-set=-all,+kill", "--no-new-privs", "--"]


def as_user(uid: int) -> list[str]:
    """A non-root UID with no capability at all (what Kubernetes gives a non-root container)."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--"]


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory every UID of the test can use (pytest's tmp_path is root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="kidecar-identity-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Game:
    """tests/support/fake_game.py under a UID: reports every SIGHUP in a JSON file."""

    def __init__(self, workdir: Path, prefix: list[str]) -> None:
        self.tag = f"fake-nginx-master-{uuid.uuid4().hex[:10]}"
        self.report = workdir / f"{self.tag}.json"
        content = workdir / "game-file"
        content.write_text("v1\n")
        self.proc = subprocess.Popen([*prefix, sys.executable, str(FAKE_GAME), "--file",
                                      str(content), "--report", str(self.report), "--tag",
                                      self.tag])

    def hups(self) -> int:
        import json

        try:
            return int(json.loads(self.report.read_text())["hups"])
        except (OSError, ValueError, KeyError):
            return -1

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def sidecar_for(game: Game, workdir: Path, prefix: list[str], owner: int,
                env: dict[str, str] | None = None) -> Sidecar:
    files = workdir / "files"
    files.mkdir(mode=0o777)
    files.chmod(0o777)
    state = workdir / "state"
    state.mkdir()
    os.chown(state, owner, owner)
    config = {"plugins": [{"name": "hot_update", "config": {
        "loadPatchType": "signal", "signal": {"processName": game.tag, "signalName": "SIGHUP"},
        "fileDir": str(files), "storageConfig": {"type": "Local"}}}]}
    return start_sidecar(config, workdir, prefix=prefix, wait_ready=True, timeout=40, env=env)


def update(sidecar: Sidecar, upstream: UpstreamServer) -> tuple[int, dict]:
    url = upstream.add_file("index.html", b"v2\n")
    reply = sidecar.post("/hot-update", data={"version": "v2", "url": url})
    return reply.status_code, reply.json()


def assert_refused(sidecar: Sidecar, game: Game, game_uid: int, kidecar_uid: int) -> None:
    """An update whose SIGHUP the kernel refuses: a 500 at the reload stage, in the
    reply and the log, naming what the pod needs; the game got no signal."""
    with UpstreamServer() as upstream:
        status, body = update(sidecar, upstream)
    needs = (f"the game runs as uid {game_uid} and kidecar as uid {kidecar_uid} without "
             "CAP_KILL: run kidecar as the game's uid")
    assert status == 500 and body["stage"] == "reload", body
    assert needs in str(body), body
    assert "add the KILL capability" in str(body)
    assert needs in sidecar.log()
    assert game.hups() == 0


def _wait_report(game: Game) -> None:
    import time

    deadline = time.monotonic() + 10
    while game.hups() < 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert game.hups() == 0, "the game never started"


def test_root_game_kidecar_as_root_with_only_cap_kill(shared: Path) -> None:
    game = Game(shared, prefix=[])  # nginx's master: root
    _wait_report(game)
    sidecar = sidecar_for(game, shared, ROOT_ONLY_KILL, owner=0)
    try:
        with UpstreamServer() as upstream:
            status, body = update(sidecar, upstream)
        assert status == 200, body
        sidecar.wait_for(lambda: game.hups() == 1, what="the game's SIGHUP")
        # kidecar really ran without any other capability
        pid = sidecar.plugin("hot_update")["pid"]
        cap_eff = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                       if line.startswith("CapEff:"))
        assert int(cap_eff.split()[1], 16) == 1 << 5  # CAP_KILL alone
    finally:
        sidecar.stop()
        game.stop()


def test_game_with_its_own_uid_kidecar_as_that_uid_without_capabilities(shared: Path) -> None:
    game = Game(shared, prefix=as_user(GAME_UID))
    _wait_report(game)
    sidecar = sidecar_for(game, shared, as_user(GAME_UID), owner=GAME_UID)
    try:
        with UpstreamServer() as upstream:
            status, body = update(sidecar, upstream)
        assert status == 200, body
        sidecar.wait_for(lambda: game.hups() == 1, what="the game's SIGHUP")
    finally:
        sidecar.stop()
        game.stop()


def test_a_refused_signal_says_what_the_pod_needs(shared: Path) -> None:
    """A non-root kidecar (runAsUser 65532) without CAP_KILL beside a root game: refused."""
    game = Game(shared, prefix=[])
    _wait_report(game)
    sidecar = sidecar_for(game, shared, as_user(IMAGE_UID), owner=IMAGE_UID)
    try:
        assert_refused(sidecar, game, game_uid=0, kidecar_uid=IMAGE_UID)
    finally:
        sidecar.stop()
        game.stop()


def status_fields(pid: int) -> dict[str, str]:
    """/proc/<pid>/status as a dict: what the kernel checks, not what kidecar says."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def process_tree(root: int) -> list[int]:
    """``root`` and every descendant (the supervisor, its HTTP worker, plugins, storage)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(status_fields(int(entry.name))["PPid"])
            except (OSError, KeyError, ValueError):
                continue
    tree, frontier = [root], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        tree += children
        frontier = children
    return tree


def test_bare_image_root_keeps_only_cap_kill_and_signals_a_root_game(shared: Path) -> None:
    """The image as the seeds use it: root, KIDECAR_KEEP_CAPABILITIES=KILL, nothing else."""
    game = Game(shared, prefix=[])  # nginx's master: root
    _wait_report(game)
    sidecar = sidecar_for(game, shared, prefix=[], owner=0,
                          env={"KIDECAR_KEEP_CAPABILITIES": "KILL"})
    try:
        with UpstreamServer() as upstream:
            status, body = update(sidecar, upstream)
        assert status == 200, body
        sidecar.wait_for(lambda: game.hups() == 1, what="the game's SIGHUP")
        plugin = sidecar.plugin("hot_update")["pid"]
        tree = process_tree(sidecar.proc.pid)
        assert plugin in tree and len(tree) >= 3, tree  # supervisor, HTTP, plugin at least
        for pid in tree:
            fields = status_fields(pid)
            assert fields["Uid"].split()[:2] == ["0", "0"], (pid, fields["Uid"])
            for name in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"):
                assert int(fields[name], 16) == 1 << 5, (pid, name, fields[name])  # KILL only
            assert fields["NoNewPrivs"] == "1", pid
        log = sidecar.log_path.read_text(errors="replace")
        assert "running as root with only these capabilities: KILL" in log
        assert log.count("running as root with only these capabilities") == 1
    finally:
        sidecar.stop()
        game.stop()


def test_bare_image_root_keeping_nothing_is_refused_by_a_game_of_another_uid(
        shared: Path) -> None:
    """KIDECAR_KEEP_CAPABILITIES empty: root without CAP_KILL, and the reply says so."""
    game = Game(shared, prefix=as_user(GAME_UID))
    _wait_report(game)
    sidecar = sidecar_for(game, shared, prefix=[], owner=0,
                          env={"KIDECAR_KEEP_CAPABILITIES": ""})
    try:
        assert_refused(sidecar, game, game_uid=GAME_UID, kidecar_uid=0)
        fields = status_fields(sidecar.plugin("hot_update")["pid"])
        assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0
    finally:
        sidecar.stop()
        game.stop()
