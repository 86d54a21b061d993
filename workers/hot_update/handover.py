"""What a hot_update process hands the next one when it is recycled (issue 16).

A recycle replaces an idle process whose last update has settled by a fresh
fork. Everything on disk and in the store is then what the new process would
restore, so it takes its predecessor's in-memory status instead of restoring
again: a restore reads the store, and ``GET /hot-update`` would show another
stage, error and restore outcome than a moment before. Only a process the
supervisor started for a granted recycle (``PluginContext.recycled``) reads
it, and only from the same supervisor process (pid and start time) within
``HANDOVER_SECONDS`` of its writing; any other start removes it, as does a new
update, so a crash or an operator's restart restores as it always did (a
recycle the supervisor declines leaves the file to the next start).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from kidecar_supervisor.plugin_kit.durable_files import atomic_write_json, remove_quietly

log = logging.getLogger(__name__)

HANDOVER_NAME = "hot-update-handover.json"
#: a recycle takes milliseconds; anything older is not one
HANDOVER_SECONDS = 30.0
_STATUS_KEYS = {"state", "stage", "restore"}


def _supervisor() -> list[int]:
    """This process's parent, the supervisor: its pid and start time (pids are reused).

    The start time (clock ticks since boot, /proc/PID/stat) is read directly: the
    fresh process should touch as little as it can (that is what recycling is for).
    """
    parent = os.getppid()
    try:
        with open(f"/proc/{parent}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return [parent, int(fields[19])]  # field 22 of stat(5), after pid and comm
    except (OSError, IndexError, ValueError):
        return [parent, -1]


class Handover:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / HANDOVER_NAME

    def give(self, status: dict[str, Any]) -> None:
        atomic_write_json(self.path, {"supervisor": _supervisor(), "at": time.monotonic(),
                                      "status": status})

    def withdraw(self) -> None:
        """Nothing to hand over (a new update started; a start that is no recycle)."""
        remove_quietly(self.path)

    def take(self) -> dict[str, Any] | None:
        """The status this plugin's previous process handed over, once; None if there
        is none, or it is not from a recycle of this kidecar."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring the unreadable handover %s: %s", self.path, exc)
            data = None
        self.withdraw()
        if not isinstance(data, dict) or data.get("supervisor") != _supervisor():
            return None
        age = time.monotonic() - float(data.get("at", -HANDOVER_SECONDS - 1))
        status = data.get("status")
        if not 0 <= age <= HANDOVER_SECONDS or not isinstance(status, dict) \
                or not _STATUS_KEYS <= status.keys():
            return None
        return status
