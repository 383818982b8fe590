"""The `kohya-wrap` command line: parse, call the core, print, map errors to exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kohya_wrap.errors import KohyaWrapError

if TYPE_CHECKING:
    from kohya_wrap.dataset import DatasetReport, StepPlan
    from kohya_wrap.presets import LoadedConfig

# Heavy modules (pydantic models, torch, onnxruntime, rich) are imported inside commands so that
# `--help` and `validate` start fast.

CONFIG_ARG = click.argument("config", type=click.Path(path_type=Path), required=False)
SET_OPTION = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config value, e.g. --set training.epochs=5 (value is TOML; repeatable).",
)  # fmt: skip
PRESET_OPTION = click.option("--preset", help="Start from this preset (see `kohya-wrap presets`).")


def echo_err(line: str) -> None:
    click.echo(line, err=True)


class Group(click.Group):
    """Turns our errors into one line each on stderr and the documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KohyaWrapError as exc:
            for line in exc.lines:
                echo_err(line)
            ctx.exit(exc.exit_code)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kohya-wrap")
def main() -> None:
    """SeaArt-style LoRA training on your own machine, through kohya-ss/sd-scripts."""


def _load(config: Path | None, overrides: tuple[str, ...], preset: str | None) -> LoadedConfig:
    from kohya_wrap.errors import ConfigError
    from kohya_wrap.presets import load_config

    if config is None and preset is None:
        raise ConfigError("config: give a config file or --preset NAME (see `kohya-wrap presets`)")
    return load_config(config, overrides, preset)


def _scan(loaded: LoadedConfig) -> tuple[DatasetReport, StepPlan]:
    from kohya_wrap.dataset import plan_steps, scan

    report = scan(loaded.config)
    return report, plan_steps(loaded.config, report)


def _print_warnings(lines: list[str]) -> None:
    for line in lines:
        echo_err(f"warning: {line}")


@main.command()
def presets() -> None:
    """List the presets (templates/*.toml)."""
    from kohya_wrap.presets import list_presets

    for name, summary in list_presets():
        click.echo(f"{name:28} {summary}")


@main.command()
@click.argument("preset")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write here instead of stdout.")
def init(preset: str, output: Path | None) -> None:
    """Start a config from PRESET (prints it, or writes it with -o; never overwrites)."""
    from kohya_wrap.errors import ConfigError
    from kohya_wrap.files import write_new_file
    from kohya_wrap.presets import preset_path

    text = preset_path(preset).read_text("utf-8")
    text = (f"# Started from the {preset} preset; `preset` pulls in its values, keys below override them.\n"
            f"preset = \"{preset}\"\n\n" + INIT_BODY)  # fmt: skip
    if output is None:
        click.echo(text, nl=False)
        return
    if output.exists():
        raise ConfigError(f"init: {output} already exists; choose another name or delete it first")
    write_new_file(output, text)
    click.echo(f"wrote {output}; edit model.base and dataset.dirs, then `kohya-wrap validate {output}`")


INIT_BODY = """\
[model]
# A .safetensors checkpoint, a diffusers folder or a hub id.
base = "path/to/checkpoint.safetensors"

[dataset]
# kohya-style folder names work: "20_zdm 1boy" = 20 repeats, caption fallback "zdm 1boy".
dirs = [{ path = "path/to/images" }]

[tagging]
trigger_word = "zdm"

[sampling]
prompts = [{ text = "zdm, 1boy, solo, looking at viewer" }]

[save]
output_name = "zdm"
"""


@main.command()
@CONFIG_ARG
@SET_OPTION
@PRESET_OPTION
def validate(config: Path | None, overrides: tuple[str, ...], preset: str | None) -> None:
    """Check CONFIG and its dataset; print warnings and the step count. Loads no model."""
    from kohya_wrap.doctor import model_file_problems

    loaded = _load(config, overrides, preset)
    report, plan = _scan(loaded)
    _print_warnings(loaded.config.warnings() + report.warnings() + model_file_problems(loaded.config))
    _print_plan(loaded, plan)


def _print_plan(loaded: LoadedConfig, plan: StepPlan) -> None:
    cfg = loaded.config
    reg = f" + {plan.reg_images_with_repeats} regularisation" if plan.reg_images_with_repeats else ""
    click.echo(f"ok: {cfg.model.family} LoRA '{cfg.output_name}', {plan.images} images × repeats = "
               f"{plan.images_with_repeats}{reg}, batch {plan.batch_size}, {plan.epochs} epochs")  # fmt: skip
    click.echo(f"steps: {plan.batches_per_epoch} per epoch × {plan.epochs} epochs = {plan.total_steps}"
               + (f" (over {plan.num_processes} processes)" if plan.num_processes > 1 else ""))  # fmt: skip
    click.echo(f"cost: {plan.seaart_cost} (images × repeats × epochs, as SeaArt counts it)")


@main.command()
@CONFIG_ARG
@SET_OPTION
@PRESET_OPTION
@click.option("-o", "--output", type=click.Path(path_type=Path), help="New folder to write the files into.")
@click.option("--new-run", is_flag=True, help="Write into a new run folder under run.runs_dir instead.")
def render(config: Path | None, overrides: tuple[str, ...], preset: str | None, output: Path | None,
           new_run: bool) -> None:  # fmt: skip
    """Write the files sd-scripts would read for CONFIG into a new folder."""
    from kohya_wrap.errors import ConfigError
    from kohya_wrap.runs import create_run, write_rendered_folder

    if (output is None) == (not new_run):
        raise ConfigError("render: give either -o DIR or --new-run")
    loaded = _load(config, overrides, preset)
    _, plan = _scan(loaded)
    _print_warnings(loaded.config.warnings())
    if new_run:
        layout = create_run(loaded, plan)
    else:
        assert output is not None
        layout = write_rendered_folder(output, loaded, plan)
    click.echo(f"rendered into {layout.root}")


@main.command()
@CONFIG_ARG
@SET_OPTION
@PRESET_OPTION
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path),
              help="Continue RUN_DIR from its last saved state (no CONFIG then).")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Print the command and the rendered files; start nothing.")
@click.option("--json", "json_lines", is_flag=True, help="Stream events as JSON lines on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Also show sd-scripts' own output live.")
def train(config: Path | None, overrides: tuple[str, ...], preset: str | None, resume_dir: Path | None,
          dry_run: bool, json_lines: bool, verbose: bool) -> None:  # fmt: skip
    """Train a LoRA with sd-scripts: new run folder, live progress, per-epoch LoRAs, report."""
    from kohya_wrap.errors import ConfigError
    from kohya_wrap.layout import RunLayout
    from kohya_wrap.progress import make_view
    from kohya_wrap.runner import execute
    from kohya_wrap.runs import create_run

    if resume_dir is not None:
        if config is not None or overrides or preset:
            raise ConfigError("train: --resume continues a run with its own config; drop CONFIG, --set and --preset")
        layout = RunLayout(resume_dir.resolve())
        execute(layout, make_view(json_lines, verbose), resume=True)
        _finish_report(layout)
        return
    from kohya_wrap.doctor import model_file_problems

    loaded = _load(config, overrides, preset)
    if problems := model_file_problems(loaded.config):
        raise ConfigError(*problems)
    report, plan = _scan(loaded)
    _print_warnings(loaded.config.warnings() + report.warnings())
    if dry_run:
        _print_dry_run(loaded, plan)
        return
    if not json_lines:
        _print_plan(loaded, plan)
    layout = create_run(loaded, plan)
    click.echo(f"run folder: {layout.root}", err=json_lines)
    try:
        execute(layout, make_view(json_lines, verbose), report)
    finally:
        _finish_report(layout)


def _finish_report(layout: Any) -> None:
    """The run's report, also for failed and interrupted runs (it shows what exists)."""
    try:
        from kohya_wrap.report import write_report
    except ImportError:
        return
    write_report(layout)


def _print_dry_run(loaded: LoadedConfig, plan: StepPlan) -> None:
    from kohya_wrap.launch import plan_training
    from kohya_wrap.layout import RunLayout
    from kohya_wrap.render import render
    from kohya_wrap.runs import runs_dir

    cfg = loaded.config
    layout = RunLayout(runs_dir(cfg) / f"{cfg.output_name}-<timestamp>")
    rendered = render(cfg, layout, plan)
    _print_plan(loaded, plan)
    for name, text in rendered.files(layout).items():
        click.echo(f"\n--- {layout.root / name}\n{text}", nl=False)
    click.echo("\n--- command\n" + plan_training(cfg, layout, rendered.script).command_text(), nl=False)


@main.command()
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
def runs(runs_dir: Path) -> None:
    """List runs with their status."""
    from kohya_wrap.runs import list_runs

    found = list_runs(runs_dir.resolve())
    if not found:
        click.echo(f"no runs in {runs_dir}")
    for layout, record in found:
        if record is None:
            click.echo(f"{layout.root.name:40} unreadable run.json")
            continue
        ended = record.ended or record.started or record.created
        click.echo(f"{layout.root.name:40} {record.status:12} {record.family:5} {record.total_steps:>6} steps  "
                   f"{ended}  {record.reason or ''}".rstrip())  # fmt: skip


@main.command()
@CONFIG_ARG
@SET_OPTION
@PRESET_OPTION
def doctor(config: Path | None, overrides: tuple[str, ...], preset: str | None) -> None:
    """Check that a run can start here (sd-scripts, interpreter, GPU, model files, disk); exit 0 only if so."""
    from kohya_wrap.doctor import diagnose

    cfg = _load(config, overrides, preset).config if (config or preset) else None
    checks = diagnose(cfg)
    marks = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}
    for check in checks:
        click.echo(f"{marks[check.level]}  {check.name}: {check.detail}")
        if check.fix and check.level != "ok":
            click.echo(f"      fix: {check.fix}")
    failed = [c for c in checks if c.level == "fail"]
    if failed:
        click.echo(f"{len(failed)} problem(s) stop a run; fix them and run `kohya-wrap doctor` again", err=True)
        raise SystemExit(2)
    click.echo("a run can start")


@main.command()
def schema() -> None:
    """Print the config's JSON schema."""
    import json

    from kohya_wrap.settings import Config

    click.echo(json.dumps(Config.model_json_schema(), indent=1, ensure_ascii=False))
