"""The comparison workflow: check the runs and the output folder, then write the sheet (no printing)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kohya_wrap.commands.train import open_run
from kohya_wrap.errors import RunError
from kohya_wrap.files import creatable_problem
from kohya_wrap.queue.sweep import sweep_runs
from kohya_wrap.review.compare import SHEET_PNG, EpochChoice, compare_runs, parse_epoch, write_comparison
from kohya_wrap.train.layout import RunLayout

__all__ = ["ComparisonResult", "EpochChoice", "compare", "parse_epoch"]

DEFAULT_RUNS_DIR = Path("runs")


@dataclass(frozen=True)
class ComparisonResult:
    """What `compare` wrote and what the sheet shows."""

    folder: Path
    page: Path  # index.html
    sheet: Path  # compare.png
    runs: tuple[Path, ...]  # one per column, in order
    labels: tuple[tuple[str, ...], ...]  # each column's `key=value` labels
    missing: tuple[str, ...]  # `<run folder>: prompt #N: why there is no image`, one per placeholder


def _default_output(parent: Path, sweep: str | None, when: dt.datetime) -> Path:
    stamp = when.strftime("%Y%m%d-%H%M%S")
    base = f"compare-{sweep}-{stamp}" if sweep else f"compare-{stamp}"
    for n in range(1, 1000):
        candidate = parent / (base + (f"-{n}" if n > 1 else ""))
        if not candidate.exists():
            return candidate
    raise RunError(f"compare: cannot find a free folder name in {parent}; give -o DIR")


def _layouts(run_dirs: Sequence[Path], sweep: str | None, runs_dir: Path) -> list[RunLayout]:
    if run_dirs and sweep is not None:
        raise RunError("compare: give run folders or --sweep NAME, not both")
    if not run_dirs and sweep is None:
        raise RunError("compare: give two or more run folders, or --sweep NAME")
    dirs = sweep_runs(runs_dir, sweep) if sweep is not None else list(run_dirs)
    if len(dirs) < 2:
        what = f"sweep {sweep} has" if sweep is not None else "got"
        raise RunError(f"compare: {what} {len(dirs)} run; give two or more to compare")
    layouts = [open_run(d) for d in dirs]
    seen: set[Path] = set()
    for layout in layouts:
        if layout.root in seen:
            raise RunError(f"compare: {layout.root} is given twice; give each run once")
        seen.add(layout.root)
    return layouts


def compare(
    run_dirs: Sequence[Path] = (),
    sweep: str | None = None,
    runs_dir: Path | None = None,
    epoch: EpochChoice = "final",
    output: Path | None = None,
    when: dt.datetime | None = None,
) -> ComparisonResult:
    """Compare run folders (or a sweep's runs) side by side in a new folder; bad input writes nothing.

    `output` defaults to `compare-[<sweep>-]<timestamp>` in `runs_dir` (for run folders: beside the first).
    """
    base = (runs_dir or DEFAULT_RUNS_DIR).expanduser().resolve()
    layouts = _layouts(run_dirs, sweep, base)
    if output is not None:
        output = output.expanduser().resolve()
        if output.exists() or output.is_symlink():
            raise RunError(f"compare: -o {output} already exists; choose a new folder (nothing is overwritten)")
        if problem := creatable_problem(output):
            raise RunError(f"compare: -o {output}: {problem}")
    comparison = compare_runs(layouts, epoch)
    parent = base if runs_dir is not None or sweep is not None else layouts[0].root.parent
    folder = output or _default_output(parent, sweep, when or dt.datetime.now())
    try:
        page = write_comparison(comparison, folder)
    except FileExistsError:
        raise RunError(f"compare: {folder} appeared meanwhile; run again (nothing is overwritten)") from None
    return ComparisonResult(
        folder,
        page,
        folder / SHEET_PNG,
        tuple(layout.root for layout in layouts),
        tuple(comparison.labels(i) for i in range(len(layouts))),
        tuple(f"{run.layout.root.name}: prompt #{row + 1}: {reason}" for run, row, reason in comparison.missing()),
    )
