"""When to restart an exited child: policy, exponential backoff, crash-loop budget.

Pure logic (no processes, no clock of its own) so it is unit-tested exactly.
The first restart after a healthy run is immediate, which keeps
crash-to-running in milliseconds; repeated crashes back off exponentially, and
too many restarts in the window mark the plugin Failed, which fails /healthz so
the kubelet restarts the container instead of kidecar spinning forever.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from kidecar_supervisor.config import RestartSettings
from kidecar_supervisor.exit_status import describe_exit
from kidecar_supervisor.states import ChildState


@dataclass(frozen=True)
class ExitDecision:
    restart: bool
    delay: float = 0.0
    #: final state when not restarting: COMPLETED or FAILED (None while restarting)
    final_state: ChildState | None = None
    reason: str = ""


@dataclass
class RestartTracker:
    settings: RestartSettings
    consecutive_failures: int = 0
    restart_times: deque[float] = field(default_factory=deque)

    def on_exit(self, now: float, exit_code: int | None, ran_for: float) -> ExitDecision:
        """Decide what to do about a child that exited with ``exit_code``.

        ``exit_code`` is None when it was killed by a signal (always a failure).
        """
        failed = exit_code != 0
        policy = self.settings.policy
        if policy == "Never":
            return ExitDecision(False, final_state=ChildState.FAILED if failed else ChildState.COMPLETED,
                                reason=f"restartPolicy Never, {describe_exit(exit_code)}")
        if policy == "OnFailure" and not failed:
            return ExitDecision(False, final_state=ChildState.COMPLETED,
                                reason="restartPolicy OnFailure, exited 0")
        if ran_for >= self.settings.backoff_reset_seconds:
            self.consecutive_failures = 0
        while self.restart_times and now - self.restart_times[0] > self.settings.restart_window_seconds:
            self.restart_times.popleft()
        if len(self.restart_times) >= self.settings.max_restarts:
            return ExitDecision(
                False, final_state=ChildState.FAILED,
                reason=(f"crash loop: {len(self.restart_times)} restarts within "
                        f"{self.settings.restart_window_seconds:g}s, {describe_exit(exit_code)}"),
            )
        delay = self._next_delay()
        self.consecutive_failures += 1
        self.restart_times.append(now + delay)
        return ExitDecision(True, delay=delay, reason=describe_exit(exit_code))

    def _next_delay(self) -> float:
        if self.consecutive_failures == 0:
            return 0.0
        delay = self.settings.backoff_seconds * (2 ** (self.consecutive_failures - 1))
        return float(min(delay, self.settings.max_backoff_seconds))

    def reset(self) -> None:
        """An operator restarted or started the plugin by hand: start afresh."""
        self.consecutive_failures = 0
        self.restart_times.clear()

