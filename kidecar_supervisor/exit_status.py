"""How a process ended, in words: the one wording of logs, ``lastError`` and Events.

``waitpid`` statuses become ``os.waitstatus_to_exitcode`` numbers: ``N >= 0``
for an exit code, ``-S`` for death by signal ``S``.
"""

from __future__ import annotations

import signal


def describe_exit(code: int | None) -> str:
    """``exit code 3``, ``killed by SIGKILL``; None: killed by an unknown signal."""
    if code is None:
        return "killed by a signal"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
