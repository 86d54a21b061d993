"""Start the real sidecar (``kidecar run``) as a process for integration tests.

No in-process shortcuts: the test talks HTTP to the port, sends real signals,
and ``stop()`` checks that the whole process tree is gone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import requests
import yaml

from tests.support.pod_limits import PodLimits

REPO = Path(__file__).resolve().parents[2]
#: ``kidecar`` as the image starts it (the Dockerfile's ENTRYPOINT): under -OO, no
#: docstrings and no asserts in any process of the tree (issue 16); tools/run-tests
#: builds the -OO bytecode caches, as the image does
KIDECAR = [sys.executable, "-OO", "-m", "kidecar_supervisor"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sidecar:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, state_dir: Path,
                 log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.state_dir = state_dir
        self.log_path = log_path
        self._tree: set[int] = set()

    # -- HTTP --------------------------------------------------------------------
    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 10)
        return requests.get(self.url + path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return requests.post(self.url + path, **kwargs)

    def plugin(self, name: str) -> dict[str, Any]:
        response = self.get(f"/plugins/{name}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def wait_for(self, predicate: Any, timeout: float = 15.0, interval: float = 0.05,
                 what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
            except (requests.RequestException, KeyError, ValueError) as exc:
                last = exc
            else:
                if last:
                    return last
            if self.proc.poll() is not None:
                raise AssertionError(f"sidecar exited ({self.proc.returncode}) waiting for {what}"
                                     f"\n{self.log()}")
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{self.log()}")

    def wait_state(self, name: str, state: str, timeout: float = 15.0) -> dict[str, Any]:
        result: dict[str, Any] = self.wait_for(
            lambda: (p := self.plugin(name))["state"] == state and p, timeout,
            what=f"{name} to be {state}")
        return result

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    # -- process tree --------------------------------------------------------------
    def tree_pids(self) -> set[int]:
        """The supervisor and all its descendants now (remembered for stop())."""
        try:
            root = psutil.Process(self.proc.pid)
            pids = {root.pid} | {p.pid for p in root.children(recursive=True)}
        except psutil.NoSuchProcess:
            pids = set()
        self._tree |= pids
        return pids

    def kill_all(self, timeout: float = 10.0) -> None:
        """SIGKILL the whole sidecar, as a node losing the pod would, and wait until no
        process of it is left: the tree as it is now, and any process still running
        with this sidecar's state dir on its command line (a forked child re-parented
        before the tree was read). A survivor would keep fileDir's lock from the
        kidecar started next."""
        deadline = time.monotonic() + timeout
        while True:
            self.proc.poll()  # reap the supervisor once it is dead
            victims = {pid for pid in self.tree_pids() if _alive(pid)}
            victims |= _running_with_state_dir(self.state_dir)
            if not victims:
                break
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"processes of the sidecar survive SIGKILL: {victims}")
            time.sleep(0.05)
        self.proc.wait(timeout)

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM the supervisor and wait; every process it ever had must be gone."""
        self.tree_pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"sidecar did not stop within {timeout}s\n{self.log()}") from None
        return int(self.proc.returncode)

    def alive_leftovers(self) -> list[int]:
        return [pid for pid in self._tree if _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _running_with_state_dir(state_dir: Path) -> set[int]:
    """Live kidecar processes (no zombies) started with ``--state-dir state_dir``."""
    found = set()
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE or "--state-dir" not in cmdline:
            continue
        index = cmdline.index("--state-dir")
        if cmdline[index + 1:index + 2] == [str(state_dir)]:
            found.add(proc.pid)
    return found


def write_config(config: dict[str, Any] | str | Path, tmp_path: Path) -> Path:
    if isinstance(config, Path):
        return config
    path = tmp_path / "kidecar.yaml"
    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    path.write_text(text)
    return path


def start_sidecar(config: dict[str, Any] | str | Path, tmp_path: Path,
                  env: dict[str, str] | None = None, wait_ready: bool = False,
                  timeout: float = 20.0, port: int | None = None,
                  limits: PodLimits | None = None, host: str = "127.0.0.1",
                  prefix: list[str] | None = None, reach: str | None = None,
                  serving_only: bool = False) -> Sidecar:
    """Start ``kidecar run`` on a free port and wait until /healthz answers 200.

    ``serving_only`` waits for any answer instead (200 or 503): a plugin that
    fails at once may reach Failed, and /healthz 503, before HTTP serves.

    With ``limits`` the whole sidecar tree runs inside that cgroup (pod limits).
    ``host`` is the bind address, ``prefix`` runs the command under a wrapper
    (``ip netns exec NAME``) and ``reach`` is the address the test calls it on.
    """
    config_path = write_config(config, tmp_path)
    port = port or free_port()
    state_dir = tmp_path / "state"
    log_path = tmp_path / f"kidecar-{port}.log"
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("PYTHONPATH", str(REPO))
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [*(prefix or []), *KIDECAR, "run", "--config", str(config_path), "--port",
             str(port), "--host", host, "--state-dir", str(state_dir)],
            stdout=log_file, stderr=subprocess.STDOUT, env=full_env, cwd=str(REPO),
            preexec_fn=limits.preexec if limits is not None else None,
        )
    sidecar = Sidecar(proc, port, state_dir, log_path)
    if reach is not None:
        sidecar.url = f"http://{reach}:{port}"
    path = "/readyz" if wait_ready else "/healthz"
    wanted = (200, 503) if serving_only else (200,)
    sidecar.wait_for(lambda: sidecar.get(path, timeout=2).status_code in wanted, timeout,
                     what=f"{path} {' or '.join(map(str, wanted))}")
    return sidecar
