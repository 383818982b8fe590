"""The compare command: several runs side by side in one sheet."""

from __future__ import annotations

from pathlib import Path

import click

from kohya_wrap.cli.common import echo_err, main


@main.command()
@click.argument("run_dirs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--sweep", metavar="NAME", help="Compare the runs of this sweep instead of RUN_DIRs.")
@click.option(
    "--runs-dir",
    type=click.Path(path_type=Path),
    help="Runs folder holding the sweep; gets the comparison [default: runs; with RUN_DIRs: where the first is].",
)
@click.option(
    "--epoch",
    default="final",
    show_default=True,
    metavar="final|N|best",
    help="Which epoch's samples to show: each run's last, epoch N, or the lowest validation loss.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="New folder to write into [default: compare-[<sweep>-]<timestamp> in the runs folder].",
)
def compare(
    run_dirs: tuple[Path, ...], sweep: str | None, runs_dir: Path | None, epoch: str, output: Path | None
) -> None:
    """Compare RUN_DIRs (or a sweep's runs): samples per prompt, loss curves, the settings that differ."""
    from kohya_wrap.commands.compare import compare as run_compare
    from kohya_wrap.commands.compare import parse_epoch

    result = run_compare(run_dirs, sweep, runs_dir, parse_epoch(epoch), output)
    for line in result.missing:
        echo_err(f"note: {line}")
    click.echo(f"sheet: {result.sheet}")
    click.echo(f"compare: {result.page}")
