"""The update that is not confirmed yet, journaled so a restart finishes it (DESIGN §9).

Written to the state dir before a new file goes into place, removed once the
update is confirmed or rolled back. A sidecar killed (SIGKILL, OOM) between
the two finds it at its next start and finishes the job before it is ready:
it confirms the new version if the game reports it, and otherwise puts the
kept previous file back. So the game is never left on files nobody confirmed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from kidecar_supervisor.plugin_kit.durable_files import atomic_write_json, remove_quietly

log = logging.getLogger("kidecar.hot_update.pending")

PENDING_NAME = "hot-update-pending.json"


@dataclass(frozen=True)
class Pending:
    """What was put in place, and what to put back: ``previous_key`` in the kept versions."""

    version: str
    url: str
    file_name: str
    sha256: str
    at: float
    previous_key: str = ""
    previous_version: str = ""
    rollback: bool = False


class PendingJournal:
    """One file in the state dir; written and read under the update lock."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / PENDING_NAME

    def write(self, pending: Pending) -> None:
        atomic_write_json(self.path, asdict(pending))

    def read(self) -> Pending | None:
        try:
            return Pending(**json.loads(self.path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.error("ignoring an unreadable %s: %s", self.path, exc)
            return None

    def clear(self) -> None:
        remove_quietly(self.path)
