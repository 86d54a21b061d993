"""The floor of the fixed process shape: what the tree costs before it does anything.

Issue 16 asks for the production tree within 48 MiB PSS. DESIGN.md §2 fixes the
shape: a Python supervisor that forks the HTTP child (gunicorn serving the Flask
app; since session 21 also the store) and one Python process per plugin. This
program builds that shape and lets (almost) nothing run, so its figures are
lower bounds no cut inside the shape goes under:

* ``shape``: the supervisor's own imports (``kidecar run`` with the seeds'
  plugins: the CLI, supervisor, launcher and the plugins' classes), its
  pre-fork build (``prefork.build_shared``) and ``gc.freeze()``, then three
  children as the launcher forks them: the HTTP child imports its stack and the
  InKube store's modules and sleeps, the two plugin processes sleep. No request,
  no probe, no update, no store thread, no heartbeat.
* ``runtime``: the same, with each plugin process running the plugin runtime
  (``run_plugin_process``: its pipe and heartbeat threads, structured logs,
  the status exchange DESIGN.md §2 asks for) around a plugin that only waits
  to be stopped; the parent reads their pipes as the supervisor does.
* ``shared``: ``shape`` with the HTTP child's imports made by the supervisor
  before the fork instead (the placement kidecar left in session 19: with
  nothing running it is the lower floor, because idle children copy nothing;
  in the running tree it measured 2 MiB more, because the HTTP child writes
  reference counts over most of those pages, docs/footprint.md).
* ``merged``: the supervisor and the HTTP child as one process (what the issue
  allows: "merging internal processes is not out of bounds"), everything
  imported before the fork, and the two plugin processes: three processes.
  Idle, whatever that process does while running is its own pages, not copies.
* ``issue``: the issue's own floor experiment (a parent that imports flask,
  gunicorn, urllib3, yaml, psutil and sqlite3, creates a TLS context,
  ``gc.freeze()``, forks idle children), here with the tree's four processes:
  the interpreter and the libraries the shape cannot leave out, without a line
  of kidecar.

Each is counted as in a pod (each resident page of the tree once,
``tests/support/tree_pages.py``; root only). Run under ``-OO`` as the image runs
kidecar: ``python -OO bench/footprint_floor.py shape|runtime|shared|merged|issue``.
Prints one line of JSON: ``{"own": MiB, "pss": MiB, "processes": N, "uss":
[MiB per process, supervisor first]}``.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

SETTLE_SECONDS = 3.0
MIB = 1 << 20

Body = Callable[[], None]


class Floor:
    """One variant: what the parent builds, and the children's bodies."""

    def __init__(self) -> None:
        self.kept: list[object] = []  # built before the fork, alive for the run
        self.temp_dirs: list[Path] = []  # the idle plugins' state dirs, removed at the end
        self.pipes: list[Connection] = []  # the parent's ends of the plugins' pipes

    def shape(self) -> list[Body]:
        """The supervisor's imports and pre-fork build; the children as forked."""
        import kidecar_supervisor.cli  # noqa: F401
        import kidecar_supervisor.launcher  # noqa: F401
        import kidecar_supervisor.supervisor  # noqa: F401
        import workers.hot_update.plugin  # noqa: F401
        import workers.http_probe.plugin  # noqa: F401
        from kidecar_supervisor.prefork import build_shared

        build_shared()
        return [_http_child_imports, _nothing, _nothing]

    def runtime(self) -> list[Body]:
        """``shape`` with the plugin runtime running in each plugin process."""
        self.shape()
        return [_http_child_imports, self._idle_plugin("idle1"), self._idle_plugin("idle2")]

    def shared(self) -> list[Body]:
        """``shape`` with the HTTP child's imports made before the fork."""
        self.shape()
        _http_child_imports()
        return [_nothing, _nothing, _nothing]

    def merged(self) -> list[Body]:
        """The supervisor and the HTTP child as one process, and the two plugins."""
        self.shared()
        return [_nothing, _nothing]

    def issue(self) -> list[Body]:
        """The issue's floor: the libraries imported and a TLS context built."""
        import sqlite3  # noqa: F401

        import flask  # noqa: F401
        import gunicorn.workers.gthread  # noqa: F401
        import psutil  # noqa: F401
        import urllib3.util.ssl_
        import yaml  # noqa: F401

        self.kept.append(urllib3.util.ssl_.create_urllib3_context())
        return [_nothing, _nothing, _nothing]

    def _idle_plugin(self, name: str) -> Body:
        from kidecar_supervisor.plugin_api import Plugin
        from kidecar_supervisor.plugin_runtime import run_plugin_process
        from kidecar_supervisor.pod_identity import PodIdentity

        class Idle(Plugin):
            def run(self) -> None:
                self.ctx.stop_requested.wait()

        Idle.name = name
        parent_end, child_end = Pipe()
        self.pipes.append(parent_end)
        state_dir = Path(tempfile.mkdtemp(prefix="kidecar-floor-"))
        self.temp_dirs.append(state_dir)

        def body() -> None:
            _quiet()
            run_plugin_process(Idle, name, None, child_end, state_dir, PodIdentity(),
                               heartbeat_interval=1.0, stop_grace=5.0)

        return body

    def settle(self) -> None:
        """Wait, reading the plugins' pipes (heartbeats, status) as the supervisor does."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            for pipe in self.pipes:
                while pipe.poll():
                    pipe.recv_bytes()
            time.sleep(0.05)


def _http_child_imports() -> None:
    """What the HTTP child imports after the fork: its stack and the InKube store."""
    import urllib3  # noqa: F401

    import kidecar_supervisor.http_app  # noqa: F401
    import kidecar_supervisor.http_server  # noqa: F401
    import kidecar_supervisor.storage.inkube  # noqa: F401
    import kidecar_supervisor.storage.service  # noqa: F401


def _nothing() -> None:
    """An idle child: forked, then asleep."""


def _quiet() -> None:
    """The child's log lines are not this program's output."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


def _fork(body: Body) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            body()
            signal.pause()
        finally:
            os._exit(0)
    return pid


def measure(variant: str) -> dict[str, Any]:
    floor = Floor()
    bodies = {"shape": floor.shape, "runtime": floor.runtime, "shared": floor.shared,
              "merged": floor.merged, "issue": floor.issue}[variant]()
    gc.freeze()
    children = [_fork(body) for body in bodies]
    try:
        floor.settle()
        import psutil

        from tests.support.tree_pages import own_mib

        tree = [os.getpid(), *children]
        memory = [psutil.Process(pid).memory_full_info() for pid in tree]
        return {"own": round(own_mib(tree), 1),
                "pss": round(sum(m.pss for m in memory) / MIB, 1), "processes": len(tree),
                "uss": [round(m.uss / MIB, 1) for m in memory]}
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for temp_dir in floor.temp_dirs:
            shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1] if len(sys.argv) > 1 else "shape")))
