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
    _scan,
    main,
)

if TYPE_CHECKING:
    from kohya_wrap.config.presets import LoadedConfig
    from kohya_wrap.data.dataset import StepPlan


@main.command()
def presets() -> None:
    """List the presets (templates/*.toml)."""
    from kohya_wrap.config.presets import list_presets

    for name, summary in list_presets():
        click.echo(f"{name:28} {summary}")


@main.command()
@click.argument("preset")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write here instead of stdout.")
def init(preset: str, output: Path | None) -> None:
    """Start a config from PRESET (prints it, or writes it with -o; never overwrites)."""
    from kohya_wrap.config.presets import preset_path
    from kohya_wrap.errors import ConfigError
    from kohya_wrap.files import write_new_file

    preset_path(preset)  # an unknown name fails here, with a suggestion
    text = (
        f"# Started from the {preset} preset; `preset` pulls in its values, keys below override them.\n"
        f'preset = "{preset}"\n\n' + INIT_BODY
    )
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
    from kohya_wrap.train.doctor import model_file_problems

    loaded = _load(config, overrides, preset)
    report, plan = _scan(loaded)
    _print_warnings(loaded.config.warnings() + report.warnings() + model_file_problems(loaded.config))
    _print_plan(loaded, plan)


def _print_plan(loaded: LoadedConfig, plan: StepPlan, read_gpu: bool = False, quiet: bool = False) -> None:
    """The plan and its time, VRAM and cost estimate on stdout (unless quiet); its warnings on stderr.

    Only `train` reads the GPU's free memory (nvidia-smi, well under a second); validate stays instant.
    """
    from kohya_wrap.review.estimate import describe, estimate, measured_runs, query_nvidia_smi, warnings
    from kohya_wrap.train.runs import runs_dir

    cfg = loaded.config
    gpu = cfg.run.gpu_ids[0] if isinstance(cfg.run.gpu_ids, list) and cfg.run.gpu_ids else 0
    est = estimate(cfg, plan, query_nvidia_smi(gpu) if read_gpu else None, measured_runs(runs_dir(cfg)))
    if not quiet:
        reg = f" + {plan.reg_images_with_repeats} regularisation" if plan.reg_images_with_repeats else ""
        click.echo(
            f"ok: {cfg.model.family} LoRA '{cfg.output_name}', {plan.images} images × repeats = "
            f"{plan.images_with_repeats}{reg}, batch {plan.batch_size}, {plan.epochs} epochs"
        )
        processes = f" (over {plan.num_processes} processes)" if plan.num_processes > 1 else ""
        steps = f"{plan.batches_per_epoch} per epoch × {plan.epochs} epochs = {plan.total_steps}"
        click.echo(f"steps: {steps}{processes}")
        for line in describe(est):
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
    from kohya_wrap.errors import ConfigError
    from kohya_wrap.train.runs import create_run, write_rendered_folder

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
        _print_plan(checked.loaded, checked.plan)
        for path, text in dry.files.items():
            click.echo(f"\n--- {path}\n{text}", nl=False)
        click.echo("\n--- command\n" + dry.command, nl=False)
        return
    commands.require_launchable(checked)
    _print_plan(checked.loaded, checked.plan, read_gpu=True, quiet=json_lines)
    layout = commands.create(checked)
    click.echo(f"run folder: {layout.root}", err=json_lines)
    commands.run(layout, make_view(json_lines, verbose), checked.report, on_report)


@main.command()
@click.option("--runs-dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
def runs(runs_dir: Path) -> None:
    """List runs with their status."""
    from kohya_wrap.train.runs import list_runs

    found = list_runs(runs_dir.resolve())
    if not found:
        click.echo(f"no runs in {runs_dir}")
    for layout, record in found:
        if record is None:
            click.echo(f"{layout.root.name:40} unreadable run.json")
            continue
        ended = record.ended or record.started or record.created
        click.echo(
            f"{layout.root.name:40} {record.status:12} {record.family:5} {record.total_steps:>6} steps  "
            f"{ended}  {record.reason or ''}".rstrip()
        )


@main.command()
@CONFIG_ARG
@SET_OPTION
@PRESET_OPTION
def doctor(config: Path | None, overrides: tuple[str, ...], preset: str | None) -> None:
    """Check that a run can start here (sd-scripts, interpreter, GPU, model files, disk); exit 0 only if so."""
    from kohya_wrap.train.doctor import diagnose

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


# Options `tag` and `prepare` share: how the tagger runs, not what it writes.


@main.command()
def schema() -> None:
    """Print the config's JSON schema."""
    import json

    from kohya_wrap.config.models import Config

    click.echo(json.dumps(Config.model_json_schema(), indent=1, ensure_ascii=False))
