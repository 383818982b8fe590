"""File names listed in one message line: the first few, then how many more."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def file_names(paths: Sequence[Path], limit: int = 5) -> str:
    """The names of the first `limit` paths joined by commas, then "and N more" for the rest."""
    shown = ", ".join(p.name for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")
