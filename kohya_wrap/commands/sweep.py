"""Sweep workflows: expand a config and a grid into checked runs, estimate them, queue them.

Every combination is validated (settings, dataset, model files) before anything is written; a sweep is
queued whole or not at all. The grid comes from `--grid key=v1,v2` options and/or the config's
`[sweep] grid = {...}` table, which is read here and removed before the settings are validated (it
describes the sweep, not a run; `train` and `validate` refuse a config that still has it).
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kohya_wrap.config.presets import LoadedConfig, compose, resolve_paths, validate
from kohya_wrap.errors import ConfigError, KohyaWrapError
from kohya_wrap.queue import sweep as grid
from kohya_wrap.queue.store import Job, NewJob, QueueStore

if TYPE_CHECKING:
    from kohya_wrap.commands.train import TrainingInput
    from kohya_wrap.review.estimate import Estimate


@dataclass(frozen=True)
class PlannedRun:
    """One combination of a sweep, checked for training: its grid values and its output name's suffix."""

    values: dict[str, Any]
    suffix: str
    checked: TrainingInput

    @property
    def output_name(self) -> str:
        return self.checked.loaded.config.output_name

    @property
    def combination(self) -> str:
        return grid.combination_text(self.values)


@dataclass(frozen=True)
class SweepPlan:
    """A sweep ready to queue: nothing of it has been written yet."""

    name: str
    runs_dir: Path
    axes: grid.Axes
    runs: tuple[PlannedRun, ...]

    @property
    def shared_warnings(self) -> list[str]:
        """Warnings every run has (shown once)."""
        first, *rest = [run.checked.warnings for run in self.runs]
        return [w for w in first if all(w in other for other in rest)]

    def own_warnings(self, run: PlannedRun) -> list[str]:
        """Warnings of this run that not every run has."""
        shared = set(self.shared_warnings)
        return [w for w in run.checked.warnings if w not in shared]


@dataclass(frozen=True)
class QueuedSweep:
    """A queued sweep: its record file and its queue rows (one per run folder, in grid order)."""

    record: Path
    jobs: tuple[Job, ...]


def plan_sweep(
    config: Path | None,
    grid_options: Sequence[str] = (),
    overrides: Sequence[str] = (),
    name: str | None = None,
    preset: str | None = None,
) -> SweepPlan:
    """Expand and check every combination; raise one line per problem (naming the combination and key)."""
    from kohya_wrap.commands.train import check_training
    from kohya_wrap.train.runs import runs_dir

    if config is None and preset is None:
        raise ConfigError("sweep: give a config file or --preset NAME (see `kohya-wrap presets`)")
    if name is not None:
        grid.check_name(name)
    option_axes = grid.parse_grid(grid_options)
    doc = compose(config, overrides, preset)
    table = doc.pop("sweep", None)
    file_axes = grid.grid_from_table(table) if table is not None else {}
    axes = grid.merge_axes(file_axes, option_axes)
    grid.check_axes(axes, overrides)
    file_base = config.resolve().parent if config is not None else Path.cwd()

    def with_values(values: dict[str, Any]) -> dict[str, Any]:
        # Paths in grid values are read like the config's own: relative to the file that names them.
        from_file = {k: v for k, v in values.items() if k in file_axes and k not in option_axes}
        from_options = {k: v for k, v in values.items() if k not in from_file}
        resolved = {**_flat_paths(from_file, file_base), **_flat_paths(from_options, Path.cwd())}
        return grid.set_values(doc, resolved)

    grid.check_values(axes)
    combinations = grid.expand(axes)
    suffixes = grid.unique_suffixes(combinations, axes)
    runs: list[PlannedRun] = []
    problems: list[tuple[str, list[str]]] = []
    for values, suffix in zip(combinations, suffixes, strict=True):
        try:
            combined = with_values(values)
            base_name = validate(combined).output_name
            named = grid.set_values(combined, {"save.output_name": f"{base_name}-{suffix}" if suffix else base_name})
            loaded = LoadedConfig(config=validate(named))
            runs.append(PlannedRun(values, suffix, check_training(loaded)))
        except KohyaWrapError as exc:
            problems.append((grid.combination_text(values), list(exc.lines)))
    if problems:
        raise ConfigError(*_problem_lines(problems, len(combinations)))
    folder = runs_dir(runs[0].checked.loaded.config)
    if name is None:
        first = runs[0]
        base = first.output_name.removesuffix(f"-{first.suffix}") if first.suffix else first.output_name
        name = f"{base}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    if grid.record_path(folder, name).exists():
        raise ConfigError(
            f"--name: a sweep named '{name}' already exists in {folder / grid.SWEEPS_DIR}; choose another name"
        )
    return SweepPlan(name, folder, axes, tuple(runs))


def _flat_paths(values: dict[str, Any], base: Path) -> dict[str, Any]:
    """Resolve path-valued settings among dotted `values` relative to `base` (as a config file's are)."""
    resolved = resolve_paths(grid.set_values({}, values), base)
    out = {}
    for key in values:
        node: Any = resolved
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def _problem_lines(problems: list[tuple[str, list[str]]], combinations: int) -> list[str]:
    """`sweep: combination a=1, b=2: section.key: message`; a problem every combination has is said once."""
    everywhere = set(problems[0][1]) if len(problems) == combinations else set()
    for _, lines in problems[1:]:
        everywhere &= set(lines)
    shared = [line for line in problems[0][1] if line in everywhere]
    lines = list(shared)
    for combination, own in problems:
        lines += [f"sweep: combination {combination}: {line}" for line in own if line not in everywhere]
    return lines


def estimate_sweep(plan: SweepPlan) -> list[Estimate]:
    """Steps, time and VRAM of each run: time from earlier runs in the runs folder where they match, else
    from this machine's GPU (nvidia-smi, well under a second) when there is one."""
    from kohya_wrap.commands.review import gpu_index
    from kohya_wrap.review.estimate import estimate, measured_runs, query_nvidia_smi

    history = measured_runs(plan.runs_dir)
    hardware = {}
    estimates = []
    for run in plan.runs:
        cfg = run.checked.loaded.config
        gpu = gpu_index(cfg)
        if gpu not in hardware:
            hardware[gpu] = query_nvidia_smi(gpu)
        estimates.append(estimate(cfg, run.checked.plan, hardware[gpu], history))
    return estimates


def queue_sweep(plan: SweepPlan, priority: int = 0) -> QueuedSweep:
    """Create every run folder (status planned), write the sweep record, queue every run; all or nothing."""
    from kohya_wrap.commands.train import create, require_launchable
    from kohya_wrap.queue.worker import gpus_needed

    for run in plan.runs:
        require_launchable(run.checked)
    with QueueStore(plan.runs_dir) as store:
        created: list[Path] = []
        record_file: Path | None = None
        try:
            for run in plan.runs:
                created.append(create(run.checked).root)
            record = grid.SweepRecord(
                plan.name,
                plan.axes,
                tuple(grid.SweepRun(path, run.values) for path, run in zip(created, plan.runs, strict=True)),
            )
            try:
                record_file = grid.write_record(plan.runs_dir, record)
            except FileExistsError:
                raise ConfigError(
                    f"--name: a sweep named '{plan.name}' was just created; choose another name"
                ) from None
            jobs = store.add_all(NewJob(path, priority, plan.name, gpus_needed(path)) for path in created)
        except BaseException:
            # Folders and record made for this sweep only: nothing of a half-queued sweep is left behind.
            for path in created:
                shutil.rmtree(path, ignore_errors=True)
            if record_file is not None:
                record_file.unlink(missing_ok=True)
            raise
    return QueuedSweep(record_file, tuple(jobs))
