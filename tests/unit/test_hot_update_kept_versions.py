"""Kept versions in the state dir: byte-exact, mtime kept, identical copies reused, pruned."""

from __future__ import annotations

import json
import os
from pathlib import Path

from workers.hot_update.kept_versions import KEPT_DIR, KeptVersions
from workers.hot_update.status import UpdateStatus
from workers.hot_update.version_marker import AppliedFile, VersionMarker


def game_file(tmp_path: Path, data: bytes, mtime_ns: int) -> Path:
    path = tmp_path / "www" / "index.html"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def test_a_kept_copy_comes_back_byte_for_byte_with_its_mtime(tmp_path: Path) -> None:
    kept = KeptVersions(tmp_path / "state", keep=3)
    source = game_file(tmp_path, b"\x00v1 bytes\xff" * 1000, 1_700_000_000_123_456_789)
    entry = kept.keep_file(source, "v1", "https://h/v1/index.html?***", at=1.0)
    out = tmp_path / "restored"
    kept.copy_out(entry, out)
    assert out.read_bytes() == source.read_bytes()
    assert out.stat().st_mtime_ns == 1_700_000_000_123_456_789
    assert kept.find("v1") == entry and kept.find("v1", sha256="0" * 64) is None


def test_identical_copies_are_reused_and_the_newest_are_kept(tmp_path: Path) -> None:
    kept = KeptVersions(tmp_path / "state", keep=2)
    for at, version in enumerate(("v1", "v2", "v3"), start=1):
        kept.keep_file(game_file(tmp_path, version.encode(), 10**18), version, "", float(at))
    again = kept.keep_file(game_file(tmp_path, b"v2", 10**18), "v2", "", 9.0)
    assert [e.version for e in kept.entries()] == ["v2", "v3", "v1"]  # used again: newest
    assert again.key == kept.find("v2").key  # type: ignore[union-attr]
    kept.prune()
    assert [e.version for e in kept.entries()] == ["v2", "v3"]
    assert sorted(p.name for p in (tmp_path / "state" / KEPT_DIR).iterdir()) == \
        sorted(e.key for e in kept.entries())


def test_an_interrupted_copy_is_no_entry_and_is_cleaned(tmp_path: Path) -> None:
    kept = KeptVersions(tmp_path / "state", keep=3)
    kept.keep_file(game_file(tmp_path, b"v1", 10**18), "v1", "", 1.0)
    half = tmp_path / "state" / KEPT_DIR / ".new-crashed"
    half.mkdir()
    (half / "data").write_bytes(b"partial")
    assert [e.version for e in kept.entries()] == ["v1"]
    kept.prune()
    assert not half.exists()


def test_urls_kidecar_0_2_stored_with_credentials_are_shown_redacted(tmp_path: Path) -> None:
    marker = VersionMarker(tmp_path / "marker")
    marker.ensure()
    marker.write(AppliedFile(version="v2", url="https://u:pw@h/x.lua?token=T",
                             file_name="x.lua", size=1, mtime_ns=1))
    assert marker.newest().url == "https://***@h/x.lua?***"  # type: ignore[union-attr]
    history = tmp_path / "history.json"
    history.write_text(json.dumps([{"version": "v2", "timestamp": 1.0,
                                    "url": "https://h/x.lua?token=T"}]))
    assert UpdateStatus(history).snapshot()["history"][0]["url"] == "https://h/x.lua?***"
