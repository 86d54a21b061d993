"""The names of a child's states, kinds and the supervisor's modes, and which
state may follow which.

Every state string of the supervisor is spelled here and nowhere else, so a
typo is an AttributeError at import, not a child stuck in a state nobody
checks for. ``TRANSITIONS`` is the whole life of a child (checked by
``Child``): a move it does not list is a bug and fails loudly. Imports nothing
of kidecar, so any module (metrics, restart policy, tests) can use it.
"""

from __future__ import annotations

from enum import StrEnum


class ChildState(StrEnum):
    """What ``/plugins`` shows as ``state``; the values are part of the HTTP API."""

    PENDING = "Pending"      # not started yet (boot order), or about to start again now
    STARTING = "Starting"    # forked; init() runs, no "started" message yet
    RUNNING = "Running"
    BACKOFF = "Backoff"      # exited; waits out the restart delay
    STOPPING = "Stopping"    # asked to stop (or killed as hung); the exit is not reaped yet
    STOPPED = "Stopped"      # stopped on purpose (operator, shutdown, hot-upgrade drain)
    COMPLETED = "Completed"  # exited 0 and its policy does not restart it
    FAILED = "Failed"        # past its crash-loop budget (or Never + failure): fails /healthz


class ChildKind(StrEnum):
    PLUGIN = "plugin"    # a Python plugin, forked, speaks the pipe protocol
    BINARY = "binary"    # an external program, exec'd; its output goes to the log
    HTTP = "http"        # the gunicorn worker serving the API, and the store (internal)


class Mode(StrEnum):
    """The supervisor as a whole (SidecarSet hot upgrade)."""

    SERVING = "serving"
    DRAINING = "draining"  # handed the socket to a newer kidecar; stopping its children
    IDLE = "idle"          # serves nothing (the older or the empty container)


#: a process exists (or its exit is not reaped yet)
ALIVE = frozenset({ChildState.STARTING, ChildState.RUNNING, ChildState.STOPPING})
#: no process, and none will come without an operator (or a new container)
FINAL = frozenset({ChildState.STOPPED, ChildState.COMPLETED, ChildState.FAILED})
#: no process now, but one is on its way (boot order or a restart delay)
WAITING = frozenset({ChildState.PENDING, ChildState.BACKOFF})
#: states a process may be started from
STARTABLE = WAITING | FINAL

#: kinds forked from the supervisor with a pipe to it
PIPED_KINDS = frozenset({ChildKind.PLUGIN, ChildKind.HTTP})
#: kinds that answer routed calls and send heartbeats (HTTP: its store's)
CALLABLE_KINDS = frozenset({ChildKind.PLUGIN, ChildKind.HTTP})
#: kinds that are running as soon as their process exists (no "started" message)
RUNNING_ON_START = frozenset({ChildKind.BINARY})
#: kinds the operator configured (the others are kidecar itself)
USER_KINDS = frozenset({ChildKind.PLUGIN, ChildKind.BINARY})

#: every legal move; anything else raises IllegalTransition
TRANSITIONS: dict[ChildState, frozenset[ChildState]] = {
    # start (forked / exec'd), stop before it ever ran, or a start that failed at once
    ChildState.PENDING: frozenset({ChildState.STARTING, ChildState.RUNNING, ChildState.STOPPED,
                                   ChildState.BACKOFF, ChildState.FAILED}),
    ChildState.STARTING: frozenset({ChildState.RUNNING, ChildState.STOPPING}) | FINAL | WAITING,
    ChildState.RUNNING: frozenset({ChildState.STOPPING}) | FINAL | WAITING,
    ChildState.STOPPING: FINAL | WAITING,
    # start again (Pending: a start that failed at once and is retried at once)
    ChildState.BACKOFF: frozenset({ChildState.STARTING, ChildState.RUNNING, ChildState.STOPPED,
                                   ChildState.PENDING, ChildState.FAILED}),
    ChildState.STOPPED: frozenset({ChildState.STARTING, ChildState.RUNNING, ChildState.PENDING,
                                   ChildState.BACKOFF, ChildState.FAILED}),
    ChildState.COMPLETED: frozenset({ChildState.STARTING, ChildState.RUNNING, ChildState.PENDING,
                                     ChildState.STOPPED, ChildState.BACKOFF, ChildState.FAILED}),
    ChildState.FAILED: frozenset({ChildState.STARTING, ChildState.RUNNING, ChildState.PENDING,
                                  ChildState.STOPPED, ChildState.BACKOFF}),
}


class IllegalTransition(RuntimeError):
    """A child was asked to move from a state that does not allow it: a supervisor bug."""

    def __init__(self, name: str, current: ChildState, wanted: ChildState | str) -> None:
        super().__init__(f"{name}: illegal transition {current} -> {wanted}")
        self.current = current
        self.wanted = wanted


def check_transition(name: str, current: ChildState, new: ChildState) -> None:
    """Raise IllegalTransition unless ``current -> new`` is in TRANSITIONS."""
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(name, current, new)
