"""The version marker: two slots in a preallocated file, written in place (finding 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.hot_update.version_marker import SLOT_BYTES, AppliedFile, VersionMarker


def _applied(file_dir: Path, version: str, content: bytes, at: float) -> AppliedFile:
    path = file_dir / "index.html"
    path.write_bytes(content)
    info = path.stat()
    return AppliedFile(version=version, url=f"http://127.0.0.1/{version}/index.html",
                       file_name="index.html", size=info.st_size, mtime_ns=info.st_mtime_ns,
                       at=at)


@pytest.fixture
def marker(tmp_path: Path) -> VersionMarker:
    made = VersionMarker(tmp_path / "state" / "m.marker")
    made.ensure()
    return made


def test_the_newest_marker_that_describes_the_file_wins(tmp_path: Path,
                                                        marker: VersionMarker) -> None:
    assert marker.in_place(tmp_path) is None and marker.newest() is None
    v2 = _applied(tmp_path, "v2", b"two", 2.0)
    marker.write(v2)
    assert marker.in_place(tmp_path) == v2
    v3 = _applied(tmp_path, "v3", b"three!", 3.0)
    marker.write(v3)
    assert marker.in_place(tmp_path) == v3
    assert VersionMarker(marker.path).in_place(tmp_path) == v3, "read back by a new process"
    assert marker.path.stat().st_size == 2 * SLOT_BYTES, "the file never grows"


def test_after_a_rollback_the_previous_marker_describes_the_file_again(
        tmp_path: Path, marker: VersionMarker) -> None:
    """The marker is written before the rename; a failed reload puts the old file back."""
    v2 = _applied(tmp_path, "v2", b"two", 2.0)
    marker.write(v2)
    elsewhere = tmp_path / "temp"
    elsewhere.mkdir()
    v3 = _applied(elsewhere, "v3", b"three!", 3.0)  # the download that was never kept
    marker.write(v3)
    assert marker.newest() == v3
    assert marker.in_place(tmp_path) == v2


def test_a_torn_slot_leaves_the_other_one(tmp_path: Path, marker: VersionMarker) -> None:
    v2 = _applied(tmp_path, "v2", b"two", 2.0)
    marker.write(v2)
    v3 = _applied(tmp_path, "v3", b"three!", 3.0)
    marker.write(v3)
    # a crash in the middle of the v3 write: half of its slot is garbage
    with open(marker.path, "r+b") as fh:
        fh.seek(0)  # v3 (sequence 2) went to slot 0
        fh.write(b"\xff" * 40)
    assert marker.newest() == v2
    assert marker.in_place(tmp_path) is None, "v2 is not the file in place any more"
