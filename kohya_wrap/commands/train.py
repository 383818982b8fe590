"""Training workflows: check a config for training, create its run folder, run it, resume it.

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

from kohya_wrap.config.presets import LoadedConfig, load_config
from kohya_wrap.data.dataset import DatasetReport, StepPlan, plan_steps, scan
from kohya_wrap.errors import ConfigError, RunError, TrainingFailed, TrainingInterrupted
from kohya_wrap.train.layout import RunLayout
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


def load(config: Path | None, overrides: tuple[str, ...] = (), preset: str | None = None) -> LoadedConfig:
    """Preset < file < `--set` overrides, validated; one of `config` or `preset` is required."""
    if config is None and preset is None:
        raise ConfigError("config: give a config file or --preset NAME (see `kohya-wrap presets`)")
    return load_config(config, overrides, preset)


def scan_dataset(loaded: LoadedConfig) -> tuple[DatasetReport, StepPlan]:
    report = scan(loaded.config)
    return report, plan_steps(loaded.config, report)


def check_training(loaded: LoadedConfig) -> TrainingInput:
    """Everything `train` checks before it writes a file: model files, dataset, steps, warnings."""
    from kohya_wrap.train.doctor import model_file_problems

    if problems := model_file_problems(loaded.config):
        raise ConfigError(*problems)
    report, plan = scan_dataset(loaded)
    return TrainingInput(loaded, report, plan, tuple(loaded.config.warnings() + report.warnings()))


def dry_run(checked: TrainingInput) -> DryRun:
    """The rendered files and the command of a run, under a placeholder run folder."""
    from kohya_wrap.train.launch import plan_training
    from kohya_wrap.train.render import render
    from kohya_wrap.train.runs import runs_dir

    cfg = checked.loaded.config
    layout = RunLayout(runs_dir(cfg) / f"{cfg.output_name}-<timestamp>")
    rendered = render(cfg, layout, checked.plan)
    files = {layout.root / name: text for name, text in rendered.files(layout).items()}
    return DryRun(files, plan_training(cfg, layout, rendered.script).command_text())


def require_launchable(checked: TrainingInput) -> None:
    """The sd-scripts checkout has this family's training script (checked before a run folder exists)."""
    from kohya_wrap.train.launch import require_script
    from kohya_wrap.train.sd_args import SCRIPT_BY_FAMILY

    cfg = checked.loaded.config
    require_script(cfg, SCRIPT_BY_FAMILY[cfg.model.family])


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


def resume(run_dir: Path, view: View, on_report: ReportHook | None = None) -> RunRecord:
    """Continue a run folder from its newest saved state (refused, writing nothing, when it can't)."""
    from kohya_wrap.train.runner import execute

    layout = open_run(run_dir)
    return _execute_and_report(layout, lambda: execute(layout, view, resume=True), on_report)


def open_run(run_dir: Path) -> RunLayout:
    """A run folder given by the user: it must be a folder holding our run.json."""
    path = run_dir.expanduser().resolve()
    if path.is_file():
        raise RunError(f"run: {path} is a file, not a run folder; give the folder that holds run.json")
    layout = RunLayout(path)
    if not layout.run_json.is_file():
        raise RunError(f"run: {layout.root} is not a run folder (no run.json)")
    return layout


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
