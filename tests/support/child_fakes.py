"""A fake ``ChildOps`` for unit tests of children, the router and control: it
records every side effect and never forks."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from kidecar_supervisor.child import Child, Process
from kidecar_supervisor.states import ChildState


@dataclass
class FakeOps:
    """Records every side effect; starting can be made to fail."""

    now: float = 1000.0
    fail_start: int = 0  # how many starts fail with OSError
    pids: Any = field(default_factory=lambda: itertools.count(101))
    signals: list[tuple[int, int]] = field(default_factory=list)
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    settled_with: list[tuple[str, ChildState, str]] = field(default_factory=list)
    forks: int = 0
    spawns: int = 0

    def clock(self) -> float:
        return self.now

    def _start(self) -> int:
        if self.fail_start:
            self.fail_start -= 1
            raise OSError("Resource temporarily unavailable")
        return int(next(self.pids))

    def fork(self, child: Child) -> Process:
        pid = self._start()
        self.forks += 1
        return Process(pid=pid, conn=f"pipe-{pid}")

    def spawn(self, child: Child) -> Process:
        pid = self._start()
        self.spawns += 1
        return Process(pid=pid, output_fd=42)

    def signal_group(self, pid: int, sig: int) -> None:
        self.signals.append((pid, sig))

    def send(self, child: Child, message: Any) -> bool:
        self.sent.append((child.name, dict(message)))
        return True

    def running(self, child: Child) -> None:
        self.ran.append(child.name)

    def settled(self, child: Child, reason: str) -> None:
        self.settled_with.append((child.name, child.state, reason))
