"""Training workflows: validate a config, render its files, create its run folder, run it, resume it, list runs.

Every front-end (the CLI, the queue worker, the Ray executor, the web app) calls these functions; none of
them prints. Progress goes to the `View` the caller passes; bad input raises a `KohyaWrapError` before any
file is written.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from kohya_wrap.config.checks import advice
from kohya_wrap.config.presets import LoadedConfig, load_config
from kohya_wrap.data.dataset import DatasetReport, StepPlan, plan_steps, scan
from kohya_wrap.errors import ConfigError, RunError, TrainingFailed, TrainingInterrupted
from kohya_wrap.train.layout import RunLayout

if TYPE_CHECKING:
    from kohya_wrap.procs import ProcessRef
    from kohya_wrap.review.estimate import Estimate
    from kohya_wrap.train.runs import RunRecord
    from kohya_wrap.train.view import View

ReportHook = Callable[[Path], None]


@dataclass(frozen=True)
class TrainingInput:
    """A config checked for training: settings, dataset scan, step plan and every warning."""

    loaded: LoadedConfig
    report: DatasetReport
    plan: StepPlan
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class DryRun:
    """Exactly what `train` would write and start, without writing or starting anything."""

    files: dict[Path, str]
    command: str
    estimate: Estimate


@dataclass(frozen=True)
class Validation:
    """A config checked without loading a model: dataset, steps, estimate, and every warning.

    Missing model files are warnings here (the config may be written on another machine); `train` refuses them.
    """

    loaded: LoadedConfig
    report: DatasetReport
    plan: StepPlan
    warnings: tuple[str, ...]
    estimate: Estimate


def load(config: Path | None, overrides: tuple[str, ...] = (), preset: str | None = None) -> LoadedConfig:
    """Preset < file < `--set` overrides, validated; one of `config` or `preset` is required."""
    if config is None and preset is None:
        raise ConfigError("config: give a config file or --preset NAME (see `kohya-wrap presets`)")
    return load_config(config, overrides, preset)


def scan_dataset(loaded: LoadedConfig) -> tuple[DatasetReport, StepPlan]:
    report = scan(loaded.config)
    return report, plan_steps(loaded.config, report)


def validate(loaded: LoadedConfig) -> Validation:
    """Check a config and its dataset as far as can be done without a model; missing model files only warn."""
    from kohya_wrap.commands.review import plan_estimate
    from kohya_wrap.train.doctor import model_file_problems

    report, plan = scan_dataset(loaded)
    warnings = advice(loaded.config) + report.warnings() + model_file_problems(loaded.config)
    return Validation(loaded, report, plan, tuple(warnings), plan_estimate(loaded.config, plan))


def check_render(loaded: LoadedConfig) -> TrainingInput:
    """What `render` checks before it writes: the dataset and steps; model files may be missing."""
    report, plan = scan_dataset(loaded)
    return TrainingInput(loaded, report, plan, tuple(advice(loaded.config)))


def render(checked: TrainingInput, output: Path | None = None) -> RunLayout:
    """Write the files sd-scripts would read into the new folder `output`, or a new run folder when None."""
    from kohya_wrap.train.runs import create_run, write_rendered_folder

    if output is None:
        return create_run(checked.loaded, checked.plan)
    return write_rendered_folder(output, checked.loaded, checked.plan)


def check_training(loaded: LoadedConfig) -> TrainingInput:
    """Everything `train` checks before it writes a file: model files, dataset, steps, warnings."""
    from kohya_wrap.train.doctor import model_file_problems

    if problems := model_file_problems(loaded.config):
        raise ConfigError(*problems)
    report, plan = scan_dataset(loaded)
    return TrainingInput(loaded, report, plan, tuple(advice(loaded.config) + report.warnings()))


def dry_run(checked: TrainingInput) -> DryRun:
    """The rendered files, the command and the estimate of a run, under a placeholder run folder."""
    from kohya_wrap.commands.review import plan_estimate
    from kohya_wrap.train.launch import plan_training
    from kohya_wrap.train.render import render as render_files
    from kohya_wrap.train.runs import runs_dir

    cfg = checked.loaded.config
    layout = RunLayout(runs_dir(cfg) / f"{cfg.output_name}-<timestamp>")
    rendered = render_files(cfg, layout, checked.plan)
    files = {layout.root / name: text for name, text in rendered.files(layout).items()}
    command = plan_training(cfg, layout, rendered.script).command_text()
    return DryRun(files, command, plan_estimate(cfg, checked.plan))


def require_launchable(checked: TrainingInput) -> None:
    """The sd-scripts checkout has this family's training script and the precision runs on this machine
    (checked before a run folder exists)."""
    from kohya_wrap.train.doctor import cpu_precision_problem
    from kohya_wrap.train.launch import require_script
    from kohya_wrap.train.sd_args import SCRIPT_BY_FAMILY

    cfg = checked.loaded.config
    require_script(cfg, SCRIPT_BY_FAMILY[cfg.model.family])
    if problem := cpu_precision_problem(cfg):
        raise ConfigError(problem)


def launch_estimate(checked: TrainingInput) -> Estimate:
    """The estimate shown before a run starts: with the GPU's free memory (nvidia-smi), so a run that will
    not fit is said before it loads its model."""
    from kohya_wrap.commands.review import plan_estimate

    return plan_estimate(checked.loaded.config, checked.plan, read_gpu=True)


def create(checked: TrainingInput) -> RunLayout:
    """A new run folder (status `planned`) with every file sd-scripts will read."""
    from kohya_wrap.train.runs import create_run

    require_launchable(checked)
    return create_run(checked.loaded, checked.plan)


def run(
    layout: RunLayout, view: View, report: DatasetReport | None = None, on_report: ReportHook | None = None
) -> RunRecord:
    """Train a planned run folder to the end; the report is written whatever happens once it started."""
    from kohya_wrap.train.runner import execute

    return _execute_and_report(layout, lambda: execute(layout, view, report), on_report)


def resume(run_dir: Path, view: View, on_report: ReportHook | None = None, check_trainer: bool = True) -> RunRecord:
    """Continue a run folder from its newest saved state (refused, writing nothing, when it can't).

    A run still training in another process on this machine is refused (two trainers never write one
    folder); the queue, whose claim already makes the run its own, passes `check_trainer=False`.
    """
    from kohya_wrap.train.runner import execute
    from kohya_wrap.train.runs import read_record

    layout = open_run(run_dir)
    if check_trainer and (owner := live_trainer(read_record(layout))) is not None:
        raise RunError(
            f"resume: {layout.root.name} is training now (pid {owner.pid}); stop it first with "
            f"`kohya-wrap stop {layout.root}`"
        )
    return _execute_and_report(layout, lambda: execute(layout, view, resume=True), on_report)


TrainerState = Literal["none", "alive", "gone", "elsewhere"]


def trainer_state(record: RunRecord) -> tuple[TrainerState, ProcessRef | None]:
    """Whether the process run.json names as training the run still runs: `none` when the run is not
    marked running (or names no process), `elsewhere` when it ran on another host (we cannot tell)."""
    from kohya_wrap.procs import ProcessRef

    owner = ProcessRef.parse(record.trainer or "") if record.status == "running" else None
    if owner is None:
        return "none", None
    alive = owner.alive()
    return ("elsewhere" if alive is None else "alive" if alive else "gone"), owner


def live_trainer(record: RunRecord) -> ProcessRef | None:
    """The process on this machine that trains the run right now, if any."""
    state, owner = trainer_state(record)
    return owner if state == "alive" else None


def lost_trainer(layout: RunLayout, record: RunRecord) -> str | None:
    """For a run marked running whose trainer is gone (kill -9, a reboot): what happened and how to go on."""
    state, owner = trainer_state(record)
    if state != "gone" or owner is None:
        return None
    return f"its trainer (pid {owner.pid}) is gone: `kohya-wrap train --resume {layout.root}` continues it"


def resumable(record: RunRecord) -> bool:
    """Stopped part-way: interrupted, failed, or marked running by a trainer that is gone (killed, a reboot)."""
    return record.status in ("interrupted", "failed") or trainer_state(record)[0] == "gone"


def open_run(run_dir: Path) -> RunLayout:
    """A run folder given by the user: it must be a folder holding our run.json."""
    path = run_dir.expanduser().resolve()
    if path.is_file():
        raise RunError(f"run: {path} is a file, not a run folder; give the folder that holds run.json")
    layout = RunLayout(path)
    if not layout.run_json.is_file():
        raise RunError(f"run: {layout.root} is not a run folder (no run.json)")
    return layout


def stop(run_dir: Path) -> str:
    """Stop a training run from anywhere the way Ctrl-C would (what it saved stays; it can be resumed).

    A run the queue holds is cancelled through the queue, whose runner stops it cleanly and does not resume
    it behind the user's back; a run started with `kohya-wrap train` gets SIGINT in the process that trains it
    (run.json names it). Returns what was done, as a line for the user.
    """
    import os
    import signal

    from kohya_wrap.commands.queue import active_job, cancel
    from kohya_wrap.train.runs import read_record

    layout = open_run(run_dir)
    record = read_record(layout)
    name = layout.root.name
    if (job := active_job(layout.root)) is not None:
        cancel(layout.root.parent, [job.id])
        return f"stopping {name}: queue job {job.id} cancelled; its runner stops it cleanly"
    if record.status != "running":
        raise RunError(f"stop: {name} is not training (it is {record.status}); nothing to stop")
    state, owner = trainer_state(record)
    if owner is None:
        raise RunError(f"stop: {layout.run_json} does not say which process trains {name}; stop it where it runs")
    if state == "elsewhere":
        raise RunError(f"stop: {name} trains on {owner.host} (pid {owner.pid}); stop it there")
    if state == "gone":
        raise RunError(
            f"stop: {name} is marked running but its trainer (pid {owner.pid}) is gone; continue it with "
            f"`kohya-wrap train --resume {layout.root}`"
        )
    os.kill(owner.pid, signal.SIGINT)
    return (
        f"stopping {name}: Ctrl-C sent to its trainer (pid {owner.pid}); what it saved stays, and "
        f"`kohya-wrap train --resume {layout.root}` continues it"
    )


def runs(base: Path) -> list[tuple[RunLayout, RunRecord | None]]:
    """Every run folder under `base`, oldest first; a folder with a broken run.json has record None."""
    from kohya_wrap.train.runs import list_runs

    return list_runs(base.resolve())


def prefetch_report() -> None:
    """Import the report's plotting libraries while sd-scripts loads its model, not after training."""
    threading.Thread(target=importlib.import_module, args=("kohya_wrap.review.report",), daemon=True).start()


def write_report(layout: RunLayout) -> Path:
    from kohya_wrap.review.report import write_report as write

    return write(layout)


def _execute_and_report(layout: RunLayout, execute: Callable[[], RunRecord], on_report: ReportHook | None) -> RunRecord:
    """Run, then write the report for finished, failed and interrupted runs (never for a refused one)."""
    prefetch_report()
    try:
        record = execute()
    except (TrainingFailed, TrainingInterrupted):
        _report(layout, on_report)
        raise
    _report(layout, on_report)
    return record


def _report(layout: RunLayout, on_report: ReportHook | None) -> None:
    path = write_report(layout)
    if on_report is not None:
        on_report(path)
