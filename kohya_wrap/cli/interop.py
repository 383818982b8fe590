"""Commands that move settings between tools: import, export."""

from __future__ import annotations

from pathlib import Path

import click

from kohya_wrap.cli.common import CONFIG_ARG, PRESET_OPTION, SET_OPTION, _load, echo_err, main

FAMILIES = ("sd15", "sdxl", "flux")
MAX_PROBLEMS = 10


@main.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Write the config here (never overwrites) [default: stdout].",
)
@click.option("--strict", is_flag=True, help="Exit 2 and write nothing if any setting of FILE is not carried over.")
@click.option("--family", type=click.Choice(FAMILIES), help="Model family, for sd-scripts files that do not say.")
def import_command(file: Path, output: Path | None, strict: bool, family: str | None) -> None:
    """Turn a kohya_ss GUI config, an sd-scripts TOML or command line, or Civitai trainer settings into a config.

    Every key of FILE is listed with its fate: mapped onto a setting, passed to sd-scripts through
    run.extra_args, or not carried over with the reason. Secrets (tokens, API keys) are never written.
    """
    from kohya_wrap.commands.interop import import_config

    result = import_config(file, output, strict, family)
    say = click.echo if output is not None else echo_err
    if output is None:
        click.echo(result.text, nl=False)
    imported = result.imported
    counts: dict[str, int] = {}
    for fate in imported.fates:
        counts[fate.kind] = counts.get(fate.kind, 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    say(f"{imported.format} {file.name}: {len(imported.fates)} keys ({summary})")
    for fate in imported.fates:
        say(f"  {fate.describe()}")
    for note in imported.notes:
        say(f"to check: {note}")
    if output is not None:
        say(f"wrote {output}")
    if result.problems:
        say("before training, fix:")
        for line in result.problems:
            say(f"  {line}")
    elif output is not None:
        say(f"next: `kohya-wrap validate {output}`")


@main.command("export")
@CONFIG_ARG
@SET_OPTION
@PRESET_OPTION
@click.option("--to", "to", type=click.Choice(["kohya_ss"]), required=True, help="The tool to write for.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The file to write (.json).")
def export_command(config: Path | None, overrides: tuple[str, ...], preset: str | None, to: str, output: Path) -> None:
    """Write CONFIG as a kohya_ss GUI config (never overwrites); settings it cannot hold are listed."""
    from kohya_wrap.commands.interop import export_config

    loaded = _load(config, overrides, preset)
    result = export_config(loaded.config, to, output)
    for path in result.written:
        click.echo(f"wrote {path}")
    for line in result.not_carried:
        echo_err(f"not carried: {line}")


def print_lora_checks(run_dir: Path) -> None:
    """`outputs RUN --check`: one verdict per LoRA file, its problems, what was not checked; exit 1 on a problem."""
    from kohya_wrap.commands.interop import check_loras

    checks = check_loras(run_dir)
    if not checks:
        click.echo("no LoRA files yet")
    failed = False
    for result in checks:
        verdict = "problems" if result.problems else "loads"
        click.echo(f"{result.path.name}: {verdict} ({result.modules} modules)")
        for line in result.checked if not result.problems else ():
            click.echo(f"  ok: {line}")
        for line in result.problems[:MAX_PROBLEMS]:
            click.echo(f"  problem: {line}")
        if len(result.problems) > MAX_PROBLEMS:
            click.echo(f"  … and {len(result.problems) - MAX_PROBLEMS} more problems")
        for line in result.notes:
            echo_err(f"note: {line}")
        failed = failed or bool(result.problems)
    if failed:
        raise click.exceptions.Exit(1)
