"""Atomic writes keep permissions sensible and never leave temporary files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kohya_wrap.files import write_atomic, write_bytes_atomic, write_new_file, write_new_folder


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.txt", "tags")
        write_new_file(tmp_path / "b.txt", "tags")
    finally:
        os.umask(old)
    assert mode(tmp_path / "a.txt") == mode(tmp_path / "b.txt") == 0o644
    assert (tmp_path / "a.txt").read_text() == "tags"


def test_replacing_keeps_the_existing_mode(tmp_path: Path) -> None:
    path = tmp_path / "caption.txt"
    path.write_text("old")
    path.chmod(0o640)
    write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"new" and mode(path) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["caption.txt"]


def test_write_new_file_never_replaces(tmp_path: Path) -> None:
    path = tmp_path / "caption.txt"
    path.write_text("mine")
    with pytest.raises(FileExistsError):
        write_new_file(path, "theirs")
    assert path.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["caption.txt"]


def test_write_new_folder_is_whole_or_absent_and_never_replaces(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_new_folder(tmp_path / "runs" / "a", {"x.txt": b"1", "y.json": b"{}"})
    finally:
        os.umask(old)
    folder = tmp_path / "runs" / "a"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {"x.txt": b"1", "y.json": b"{}"}
    assert mode(folder) == 0o755  # not mkdtemp's private 0o700
    with pytest.raises(FileExistsError):
        write_new_folder(folder, {"z.txt": b"2"})
    assert sorted(p.name for p in folder.iterdir()) == ["x.txt", "y.json"]
    with pytest.raises(NotADirectoryError):  # "sub" is a file, so nothing can go inside it
        write_new_folder(tmp_path / "runs" / "b", {"sub": b"", "sub/inner": b""})
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["a"]  # no half-written folder left
