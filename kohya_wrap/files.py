"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _new_file_mode(path: Path) -> int:
    """Keep an existing file's permissions; a new file gets the usual 0o666 minus the umask.

    mkstemp makes its files private (0o600), which is wrong for captions, configs and reports.
    """
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _temp_with(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _new_file_mode(path))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder, then rename over it."""
    tmp = _temp_with(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically, replacing any existing file."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_new_file(path: Path, text: str) -> None:
    """Like write_atomic, but fails with FileExistsError instead of replacing an existing file."""
    tmp = _temp_with(path, text.encode("utf-8"))
    try:
        # link() refuses an existing target, so a file that appeared meanwhile is never replaced.
        os.link(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_new_folder(path: Path, files: Mapping[str, bytes]) -> None:
    """Create the folder `path` holding `files` (name → content), whole or not at all.

    The files go into a hidden sibling folder that is renamed into place in one step; an existing `path`
    raises FileExistsError and is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes its folders private; this one is the user's
        if path.exists():
            raise FileExistsError(path)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def creatable_problem(path: Path) -> str | None:
    """Why `path` (a file or folder to be made, with any missing parents) cannot be created; None if it can.

    Checked before anything is written, so a bad output path is one line instead of a traceback halfway.
    """
    ancestor = path
    while not ancestor.exists() and not ancestor.is_symlink():
        if ancestor.parent == ancestor:
            return None
        ancestor = ancestor.parent
    if ancestor != path and not ancestor.is_dir():
        return f"{ancestor} is a file, so {path} cannot be created inside it"
    if ancestor != path and not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot write in {ancestor} (permission denied)"
    return None
