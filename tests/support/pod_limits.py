"""Run a process tree under a pod's limits: a cgroup with the shipped manifests'
CPU (100m) and memory (128Mi) limits, created for one test and removed after it.

Works with cgroup v2 (``cpu.max``, ``memory.max``) and with the v1 hierarchies
(``cpu.cfs_quota_us``, ``memory.limit_in_bytes``) this machine may have. Needs
root (CI runs as root). Use ``preexec`` as a ``Popen`` ``preexec_fn`` so the
process and everything it forks start inside the limits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
MANIFEST_CPU_MILLIS = 100
MANIFEST_MEMORY_BYTES = 128 * 1024 * 1024


@dataclass
class PodLimits:
    """The cgroup directories that hold the limited processes (one per hierarchy)."""

    dirs: list[Path] = field(default_factory=list)

    def preexec(self) -> None:
        """Move the calling (just forked) process into every limited cgroup."""
        for directory in self.dirs:
            (directory / "cgroup.procs").write_text(str(os.getpid()))

    def add(self, pid: int) -> None:
        for directory in self.dirs:
            (directory / "cgroup.procs").write_text(str(pid))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for directory in self.dirs:
            with contextlib.suppress(OSError):
                found |= {int(p) for p in (directory / "cgroup.procs").read_text().split()}
        return found

    def memory_peak_bytes(self) -> int | None:
        for directory in self.dirs:
            for name in ("memory.peak", "memory.max_usage_in_bytes"):
                with contextlib.suppress(OSError, ValueError):
                    return int((directory / name).read_text())
        return None

    def oom_kills(self) -> int:
        for directory in self.dirs:
            with contextlib.suppress(OSError):
                for line in (directory / "memory.events").read_text().splitlines():
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
            with contextlib.suppress(OSError):
                for line in (directory / "memory.oom_control").read_text().splitlines():
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
        return 0


def _own_v1_path(controller: str) -> Path | None:
    """This process's cgroup directory in the v1 hierarchy of ``controller``."""
    base = CGROUP_ROOT / controller
    if not base.is_dir():
        return None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return base / path.lstrip("/")
    return base


def _make_dirs(name: str, cpu_millis: int, memory_bytes: int) -> list[Path]:
    unified = CGROUP_ROOT / "cgroup.controllers"
    if unified.exists():  # cgroup v2 mounted at the root
        directory = CGROUP_ROOT / name
        directory.mkdir()
        (directory / "cpu.max").write_text(f"{cpu_millis * 100} 100000")
        (directory / "memory.max").write_text(str(memory_bytes))
        with contextlib.suppress(OSError):
            (directory / "memory.swap.max").write_text("0")
        return [directory]
    dirs: list[Path] = []
    cpu = _own_v1_path("cpu")
    if cpu is None:
        raise RuntimeError("no cpu cgroup controller on this machine")
    cpu_dir = cpu / name
    cpu_dir.mkdir()
    dirs.append(cpu_dir)
    (cpu_dir / "cpu.cfs_period_us").write_text("100000")
    (cpu_dir / "cpu.cfs_quota_us").write_text(str(cpu_millis * 100))
    memory = _own_v1_path("memory")
    if memory is None:
        raise RuntimeError("no memory cgroup controller on this machine")
    memory_dir = memory / name
    memory_dir.mkdir()
    dirs.append(memory_dir)
    (memory_dir / "memory.limit_in_bytes").write_text(str(memory_bytes))
    with contextlib.suppress(OSError):
        (memory_dir / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
    return dirs


def _remove(limits: PodLimits) -> None:
    """Kill whatever is still inside, then remove the cgroups (retrying while they empty)."""
    for pid in limits.pids():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for directory in reversed(limits.dirs):
        deadline = time.monotonic() + 10.0
        while True:
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                for pid in limits.pids():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.05)


@contextlib.contextmanager
def pod_limits(cpu_millis: int = MANIFEST_CPU_MILLIS,
               memory_bytes: int = MANIFEST_MEMORY_BYTES) -> Iterator[PodLimits]:
    """A fresh cgroup with the pod's limits; removed (processes killed) on exit."""
    if os.geteuid() != 0:
        raise RuntimeError("pod_limits needs root to create cgroups (CI runs as root)")
    name = f"kidecar-test-{uuid.uuid4().hex[:10]}"
    limits = PodLimits(_make_dirs(name, cpu_millis, memory_bytes))
    try:
        yield limits
    finally:
        _remove(limits)
