"""The control socket and its authkey are the sidecar user's alone (issue 14 §3): mode
0600 owned by that user, whatever the umask, and a leftover key temp file with an
open mode does not leak its mode into the new key."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from kidecar_supervisor.control_channel import control_socket_path
from tests.support.sidecar_process import start_sidecar


def _config(tmp_path: Path) -> dict[str, Any]:
    file_dir = tmp_path / "www"
    file_dir.mkdir(exist_ok=True)
    return {"plugins": [{"name": "hot_update", "config": {
        "loadPatchType": "signal",
        "signal": {"processName": "no-such-game-process", "signalName": "SIGHUP"},
        "fileDir": str(file_dir), "storageConfig": {"type": "Local"}}}]}


def _mode(path: Path | str) -> tuple[int, int]:
    info = os.stat(path)
    return stat.S_IMODE(info.st_mode), info.st_uid


def test_socket_and_authkey_are_0600_with_an_open_umask(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    leftover = state / "control.tmp"  # what a crash between open and rename leaves
    leftover.write_bytes(b"stale")
    os.chmod(leftover, 0o666)
    previous = os.umask(0)  # the sidecar inherits it: nothing may depend on the umask
    try:
        sidecar = start_sidecar(_config(tmp_path), tmp_path, wait_ready=True)
    finally:
        os.umask(previous)
    try:
        socket_path = control_socket_path(state)
        assert stat.S_ISSOCK(os.stat(socket_path).st_mode)
        assert _mode(socket_path) == (0o600, os.geteuid())
        key = state / "control.key"
        assert _mode(key) == (0o600, os.geteuid())
        assert len(key.read_bytes()) == 32
        # the CLI (same user) still reaches the supervisor through them
        assert sidecar.get("/healthz").status_code == 200
    finally:
        assert sidecar.stop() == 0
