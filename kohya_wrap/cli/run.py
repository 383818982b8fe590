"""Commands around one training run: presets, init, validate, render, train, runs, doctor, schema."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from kohya_wrap.cli.common import (
    CONFIG_ARG,
    PRESET_OPTION,
    SET_OPTION,
    _load,
    _print_warnings,
    main,
)

if TYPE_CHECKING:
    from kohya_wrap.config.models import Config
    from kohya_wrap.data.dataset import StepPlan
    from kohya_wrap.review.estimate import Estimate


@main.command()
def presets() -> None:
    """List the presets (templates/*.toml)."""
    from kohya_wrap.commands import setup

    for preset in setup.presets():
        click.echo(f"{preset.name:28} {preset.summary}")


@main.command()
@click.argument("preset")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write here instead of stdout.")
def init(preset: str, output: Path | None) -> None:
    """Start a config from PRESET (prints it, or writes it with -o; never overwrites)."""
    from kohya_wrap.commands import setup

    new = setup.init(preset, output)
    if new.written is None:
        click.echo(new.text, nl=False)
        return
    click.echo(f"wrote {new.written}; edit model.base and dataset.dirs, then `kohya-wrap validate {new.written}`")


@main.command()
@CONFIG_ARG
@SET_OPTION
@PRESET_OPTION
def validate(config: Path | None, overrides: tuple[str, ...], preset: str | None) -> None:
    """Check CONFIG and its dataset; print warnings and the step count. Loads no model."""
    from kohya_wrap.commands import train as commands

    checked = commands.validate(_load(config, overrides, preset))
    _print_warnings(list(checked.warnings))
    _print_plan(checked.loaded.config, checked.plan, checked.estimate)


def _print_plan(cfg: Config, plan: StepPlan, est: Estimate, quiet: bool = False) -> None:
    """The plan and its time, VRAM and cost estimate on stdout (unless quiet); its warnings on stderr."""
    from kohya_wrap.review.estimate import describe, plan_lines, warnings

    if not quiet:
        summary, *rest = plan_lines(cfg, plan)
        for line in [f"ok: {summary}", *rest, *describe(est)]:
            click.echo(line)
    _print_warnings(warnings(est))


@main.command()
@CONFIG_ARG
@SET_OPTION
@PRESET_OPTION
@click.option("-o", "--output", type=click.Path(path_type=Path), help="New folder to write the files into.")
@click.option("--new-run", is_flag=True, help="Write into a new run folder under run.runs_dir instead.")
def render(
    config: Path | None, overrides: tuple[str, ...], preset: str | None, output: Path | None, new_run: bool
) -> None:
    """Write the files sd-scripts would read for CONFIG into a new folder."""
    from kohya_wrap.commands import train as commands
    from kohya_wrap.errors import ConfigError

    if (output is None) == (not new_run):
        raise ConfigError("render: give either -o DIR or --new-run")
    checked = commands.check_render(_load(config, overrides, preset))
    _print_warnings(list(checked.warnings))
    layout = commands.render(checked, None if new_run else output)
    click.echo(f"rendered into {layout.root}")


@main.command()
@CONFIG_ARG
@SET_OPTION
@PRESET_OPTION
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(path_type=Path),
    help="Continue RUN_DIR from its last saved state (no CONFIG then).",
)
@click.option("--dry-run", is_flag=True, help="Print the command and the rendered files; start nothing.")
@click.option("--json", "json_lines", is_flag=True, help="Stream events as JSON lines on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Also show sd-scripts' own output live.")
def train(
    config: Path | None,
    overrides: tuple[str, ...],
    preset: str | None,
    resume_dir: Path | None,
    dry_run: bool,
    json_lines: bool,
    verbose: bool,
) -> None:
    """Train a LoRA with sd-scripts: new run folder, live progress, per-epoch LoRAs, report."""
    from kohya_wrap.commands import train as commands
    from kohya_wrap.errors import ConfigError
    from kohya_wrap.progress import make_view

    def on_report(path: Path) -> None:
        click.echo(f"report: {path}", err=json_lines)

    if resume_dir is not None:
        if config is not None or overrides or preset:
            raise ConfigError("train: --resume continues a run with its own config; drop CONFIG, --set and --preset")
        commands.resume(resume_dir, make_view(json_lines, verbose), on_report)
        return
    checked = commands.check_training(_load(config, overrides, preset))
    _print_warnings(list(checked.warnings))
    if dry_run:
        dry = commands.dry_run(checked)
        _print_plan(checked.loaded.config, checked.plan, dry.estimate)
        for path, text in dry.files.items():
            click.echo(f"\n--- {path}\n{text}", nl=False)
        click.echo("\n--- command\n" + dry.command, nl=False)
        return
    commands.require_launchable(checked)
    _print_plan(checked.loaded.config, checked.plan, commands.launch_estimate(checked), quiet=json_lines)
    layout = commands.create(checked)
    click.echo(f"run folder: {layout.root}", err=json_lines)
    commands.run(layout, make_view(json_lines, verbose), checked.report, on_report)


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
def stop(run_dir: Path) -> None:
    """Stop a training run from another terminal, as Ctrl-C would (it stays resumable)."""
    from kohya_wrap.commands import train as commands

    click.echo(commands.stop(run_dir))


@main.command()
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
def runs(runs_dir: Path) -> None:
    """List runs with their status."""
    from kohya_wrap.commands import train as commands

    found = commands.runs(runs_dir)
    if not found:
        click.echo(f"no runs in {runs_dir}")
    for layout, record in found:
        if record is None:
            click.echo(f"{layout.root.name:40} unreadable run.json")
            continue
        ended = record.ended or record.started or record.created
        reason = commands.lost_trainer(layout, record) or record.reason or ""
        click.echo(
            f"{layout.root.name:40} {record.status:12} {record.family:5} {record.total_steps:>6} steps  "
            f"{ended}  {reason}".rstrip()
        )


@main.command()
@CONFIG_ARG
@SET_OPTION
@PRESET_OPTION
def doctor(config: Path | None, overrides: tuple[str, ...], preset: str | None) -> None:
    """Check that a run can start here (sd-scripts, interpreter, GPU, model files, disk); exit 0 only if so."""
    from kohya_wrap.commands import setup

    diagnosis = setup.doctor(_load(config, overrides, preset) if (config or preset) else None)
    marks = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}
    for check in diagnosis.checks:
        click.echo(f"{marks[check.level]}  {check.name}: {check.detail}")
        if check.fix and check.level != "ok":
            click.echo(f"      fix: {check.fix}")
    if failed := diagnosis.failed:
        click.echo(f"{len(failed)} problem(s) stop a run; fix them and run `kohya-wrap doctor` again", err=True)
        raise SystemExit(2)
    click.echo("a run can start")


@main.command()
def schema() -> None:
    """Print the config's JSON schema."""
    import json

    from kohya_wrap.commands import setup

    click.echo(json.dumps(setup.schema(), indent=1, ensure_ascii=False))
