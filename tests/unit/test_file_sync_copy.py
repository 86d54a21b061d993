"""tree_copy on real files: only changed files are written, each atomically, never partial."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from workers.file_sync.tree_copy import (
    TEMP_PREFIX,
    SyncAborted,
    SyncError,
    file_sha256,
    sync_tree,
)


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _past(path: Path) -> int:
    """Backdate ``path`` so any rewrite would show in its mtime."""
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    return os.stat(path).st_mtime_ns


def test_first_sync_copies_everything_with_modes_and_subdirs(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", {"a.lua": b"print(1)", "maps/m1.json": b"{}",
                                   "maps/deep/m2.bin": os.urandom(300_000)})
    os.chmod(src / "a.lua", 0o750)
    dst = tmp_path / "dst"
    report = sync_tree(src, dst)
    assert sorted(report.copied) == ["a.lua", "maps/deep/m2.bin", "maps/m1.json"]
    assert report.unchanged == 0 and report.bytes_copied == 8 + 2 + 300_000
    for rel in report.copied:
        assert (dst / rel).read_bytes() == (src / rel).read_bytes()
    assert os.stat(dst / "a.lua").st_mode & 0o777 == 0o750
    assert not [p for p in dst.rglob(TEMP_PREFIX + "*")]


def test_only_changed_files_are_rewritten(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", {"same.txt": b"same", "grow.txt": b"v1",
                                   "flip.txt": b"AAAA", "new/x.txt": b"x"})
    dst = _tree(tmp_path / "dst", {"same.txt": b"same", "grow.txt": b"v",
                                   "flip.txt": b"BBBB", "theirs.txt": b"game's own"})
    same_mtime, same_ino = _past(dst / "same.txt"), os.stat(dst / "same.txt").st_ino
    _past(dst / "flip.txt")
    report = sync_tree(src, dst)
    assert sorted(report.copied) == ["flip.txt", "grow.txt", "new/x.txt"]
    assert report.unchanged == 1
    info = os.stat(dst / "same.txt")
    assert (info.st_mtime_ns, info.st_ino) == (same_mtime, same_ino)  # untouched
    assert (dst / "flip.txt").read_bytes() == b"AAAA"  # same size, other content
    assert (dst / "theirs.txt").read_bytes() == b"game's own"  # not ours: left alone


def test_second_sync_touches_nothing_and_digest_is_stable(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", {"a": b"1", "b/c": b"2"})
    dst = tmp_path / "dst"
    first = sync_tree(src, dst)
    mtimes = {p: _past(dst / p) for p in ("a", "b/c")}
    second = sync_tree(src, dst)
    assert second.copied == [] and second.unchanged == 2
    assert second.digest == first.digest
    assert {p: os.stat(dst / p).st_mtime_ns for p in mtimes} == mtimes
    (src / "a").write_bytes(b"9")
    assert sync_tree(src, dst).digest != first.digest


def test_reader_never_sees_a_partial_file_during_a_big_copy(tmp_path: Path) -> None:
    old, new = b"o" * (8 << 20), bytes(range(256)) * (160 << 10)  # 8 MiB -> 40 MiB
    valid = {hashlib.sha256(old).hexdigest(): "old", hashlib.sha256(new).hexdigest(): "new"}
    src = _tree(tmp_path / "src", {"pak.bin": new})
    dst = _tree(tmp_path / "dst", {"pak.bin": old})
    seen: list[str] = []
    bad: list[int] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            data = (dst / "pak.bin").read_bytes()
            kind = valid.get(hashlib.sha256(data).hexdigest())
            if kind is None:
                bad.append(len(data))
            elif not seen or seen[-1] != kind:
                seen.append(kind)

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.1)
    report = sync_tree(src, dst)
    time.sleep(0.2)
    done.set()
    thread.join(10)
    assert report.copied == ["pak.bin"]
    assert bad == [], f"a reader saw partial files of sizes {bad[:5]}"
    assert seen == ["old", "new"]


def test_temp_leftovers_of_a_crash_are_removed(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", {"a": b"1"})
    dst = _tree(tmp_path / "dst", {TEMP_PREFIX + "abc": b"half", "sub/" + TEMP_PREFIX + "x": b""})
    sync_tree(src, dst)
    assert sorted(p.name for p in dst.rglob("*") if p.is_file()) == ["a"]


def test_symlinked_files_are_copied_as_content_and_specials_skipped(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", {"real.txt": b"content"})
    (src / "link.txt").symlink_to(src / "real.txt")
    (src / "dangling").symlink_to(src / "nowhere")
    os.mkfifo(src / "fifo")
    dst = tmp_path / "dst"
    report = sync_tree(src, dst)
    assert sorted(report.copied) == ["link.txt", "real.txt"]
    assert sorted(report.skipped) == ["dangling", "fifo"]
    assert not (dst / "link.txt").is_symlink() and (dst / "link.txt").read_bytes() == b"content"


def test_missing_source_and_unwritable_target_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SyncError, match="srcDir .* is not a directory"):
        sync_tree(tmp_path / "nope", tmp_path / "dst")
    src = _tree(tmp_path / "src", {"d/f": b"1"})
    dst = _tree(tmp_path / "dst", {"d": b"a file where a directory must go"})
    with pytest.raises(SyncError, match="cannot copy .*d/f"):
        sync_tree(src, dst)
    assert (dst / "d").read_bytes() == b"a file where a directory must go"


def test_stop_aborts_between_files_and_leaves_complete_files(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", {f"f{i}": b"x" * 10 for i in range(5)})
    stop = threading.Event()
    stop.set()
    with pytest.raises(SyncAborted):
        sync_tree(src, tmp_path / "dst", stop=stop)
    assert not list((tmp_path / "dst").iterdir())
    assert file_sha256(src / "f0") == hashlib.sha256(b"x" * 10).hexdigest()


def test_a_symlinked_directory_in_dst_never_leads_a_write_outside(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", {"conf/game.cfg": b"new", "conf/deep/x.cfg": b"x"})
    outside = tmp_path / "outside"
    outside.mkdir()
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "conf").symlink_to(outside)
    with pytest.raises(SyncError, match="symlinked directory"):
        sync_tree(src, dst)
    assert list(outside.iterdir()) == []


def test_a_symlinked_source_directory_is_reported_skipped(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", {"real/a.cfg": b"a"})
    (src / "linked").symlink_to(src / "real")
    report = sync_tree(src, tmp_path / "dst")
    assert report.copied == ["real/a.cfg"]
    assert "linked" in report.skipped
