"""What was synced into dstDir last, and whether the game has reloaded it since.

Kept as a hidden file in dstDir itself (the shared emptyDir), not in the
sidecar's state dir: the emptyDir lives as long as the pod, so after a sidecar
container restart (the normal way a new files image arrives) kidecar still
knows whether the files in place were already reloaded. A sync that copied
nothing but finds ``reloaded: false`` (the last reload failed or was cut
short) reloads again instead of forgetting it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from kidecar_supervisor.plugin_kit.durable_files import atomic_write_json
from workers.file_sync.tree_copy import TEMP_PREFIX

log = logging.getLogger("kidecar.file_sync.marker")

MARKER_NAME = ".kidecar-file-sync.json"


@dataclass(frozen=True)
class SyncMarker:
    version: str
    digest: str
    reloaded: bool


def read_marker(dst: Path) -> SyncMarker | None:
    try:
        data = json.loads((dst / MARKER_NAME).read_text())
        return SyncMarker(version=str(data["version"]), digest=str(data["digest"]),
                          reloaded=bool(data["reloaded"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring an unreadable %s: %s", MARKER_NAME, exc)
        return None


def write_marker(dst: Path, marker: SyncMarker) -> None:
    # the temp name carries the copy's prefix: a crash leftover is removed like the copy's
    atomic_write_json(dst / MARKER_NAME, asdict(marker), temp_path=dst / (TEMP_PREFIX + "marker"))
