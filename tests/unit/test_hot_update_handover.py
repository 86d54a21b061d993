"""The status a recycled hot_update process hands the next one (issue 16).

Only a recycle of this kidecar may skip the restore at start: a handover from
another supervisor, an old one, or a damaged one is ignored, and any is read once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from workers.hot_update.handover import HANDOVER_NAME, HANDOVER_SECONDS, Handover

STATUS = {"state": "failed", "stage": "rolledBack", "lastError": {"error": "refused"},
          "restore": {"state": "nothing-recorded"}}


def test_the_next_process_of_the_same_kidecar_takes_the_status_once(tmp_path: Path) -> None:
    Handover(tmp_path).give(STATUS)
    fresh = Handover(tmp_path)  # the fresh process: a sibling of the same supervisor
    assert fresh.take() == STATUS
    assert fresh.take() is None and not (tmp_path / HANDOVER_NAME).exists()


def test_a_withdrawn_handover_is_not_taken(tmp_path: Path) -> None:
    handover = Handover(tmp_path)
    handover.give(STATUS)
    handover.withdraw()  # a new update started after all
    assert Handover(tmp_path).take() is None


def _write(tmp_path: Path, **changes: object) -> None:
    Handover(tmp_path).give(STATUS)
    path = tmp_path / HANDOVER_NAME
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_a_handover_from_another_kidecar_is_ignored_and_removed(tmp_path: Path) -> None:
    _write(tmp_path, supervisor=[1, 12345.0])  # e.g. the container before a restart
    assert Handover(tmp_path).take() is None
    assert not (tmp_path / HANDOVER_NAME).exists()


def test_an_old_handover_is_ignored(tmp_path: Path) -> None:
    _write(tmp_path, at=time.monotonic() - HANDOVER_SECONDS - 1)
    assert Handover(tmp_path).take() is None


def test_a_damaged_handover_is_ignored_and_removed(tmp_path: Path) -> None:
    (tmp_path / HANDOVER_NAME).write_text('{"supervisor": ')
    assert Handover(tmp_path).take() is None
    assert not (tmp_path / HANDOVER_NAME).exists()
    _write(tmp_path, status={"state": "idle"})  # incomplete
    assert Handover(tmp_path).take() is None
