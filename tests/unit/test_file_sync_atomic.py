"""A sync is atomic for the game: a failure mid-tree leaves the whole old tree, and a
successful one switches every file at once (issue 14 §3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workers.file_sync.tree_copy import SyncError, sync_tree
from workers.file_sync.tree_switch import stage_path


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def _contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


OLD = {"a.cfg": b"old a", "b/levels.dat": b"old levels", "z.lua": b"old z"}
NEW = {"a.cfg": b"new a", "b/levels.dat": b"new levels", "c/x.lua": b"new x",
       "z.lua": b"new z"}


@pytest.mark.parametrize("staged", [True, False], ids=["switch", "in-place"])
def test_a_failure_mid_tree_leaves_the_whole_old_tree(tmp_path: Path, staged: bool) -> None:
    src = _tree(tmp_path / "src", NEW)
    dst = _tree(tmp_path / "dst", {**OLD, "c": b"a file where the directory c must go"})
    before = _contents(dst)
    with pytest.raises(SyncError, match="cannot copy .*c/x.lua"):
        sync_tree(src, dst, staged=staged)  # a.cfg and b/ come before c/x.lua
    assert _contents(dst) == before  # not a.cfg new and z.lua old
    assert sorted(os.listdir(tmp_path)) == ["dst", "src"]  # no stage, no temps
    assert not [p for p in dst.rglob(".*")]


def test_a_switch_keeps_unchanged_files_and_files_only_in_dst(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", {"same.cfg": b"same", "new.cfg": b"v2"})
    dst = _tree(tmp_path / "dst", {"same.cfg": b"same", "new.cfg": b"v1",
                                   "game-owned/save.dat": b"the game's"})
    os.chmod(dst / "game-owned", 0o700)
    same_ino = os.stat(dst / "same.cfg").st_ino
    report = sync_tree(src, dst)
    assert report.copied == ["new.cfg"] and report.unchanged == 1
    assert _contents(dst) == {"game-owned/save.dat": b"the game's", "new.cfg": b"v2",
                              "same.cfg": b"same"}
    assert os.stat(dst / "same.cfg").st_ino == same_ino  # untouched, not rewritten
    assert os.stat(dst / "game-owned").st_mode & 0o777 == 0o700
    assert not os.path.lexists(stage_path(dst))


def test_the_switch_is_one_step_for_a_reader_holding_the_directory(tmp_path: Path) -> None:
    """A reader that opened dstDir before the sync sees only old files through that
    handle (the old tree), and the path dstDir names only new files after it: the
    tree was exchanged, not rewritten file by file."""
    src = _tree(tmp_path / "src", NEW)
    dst = _tree(tmp_path / "dst", OLD)
    old_fd = os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
    held = open(os.path.join(f"/proc/self/fd/{old_fd}", "a.cfg"), "rb")  # noqa: SIM115
    try:
        sync_tree(src, dst)
        assert _contents(dst) == NEW
        assert held.read() == b"old a"
    finally:
        held.close()
        os.close(old_fd)


def test_a_leftover_stage_of_a_crash_is_removed(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", {"a": b"1"})
    dst = _tree(tmp_path / "dst", {"a": b"1"})
    _tree(stage_path(dst), {"half": b"x"})
    sync_tree(src, dst)
    assert not os.path.lexists(stage_path(dst))
