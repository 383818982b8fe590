"""What every command module shares: the `main` group, common options, error-to-exit-code mapping."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kohya_wrap.errors import KohyaWrapError

if TYPE_CHECKING:
    from kohya_wrap.config.presets import LoadedConfig

# Heavy modules (pydantic models, torch, onnxruntime, rich) are imported inside commands so that
# `--help` and `validate` start fast.

CONFIG_ARG = click.argument("config", type=click.Path(path_type=Path), required=False)
SET_OPTION = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set training.epochs=5 (value is TOML; repeatable).",
)
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
    from kohya_wrap.commands.train import load

    return load(config, overrides, preset)


def _print_warnings(lines: list[str]) -> None:
    for line in lines:
        echo_err(f"warning: {line}")
