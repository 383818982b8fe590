"""Moving between tools: import kohya_ss / sd-scripts / Civitai settings, export to kohya_ss, check LoRAs load.

Plain functions for every front-end: they print nothing, return dataclasses and raise `KohyaWrapError`
before writing anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kohya_wrap.config.models import Config
from kohya_wrap.errors import ConfigError
from kohya_wrap.interop.importers.draft import Imported, config_toml

if TYPE_CHECKING:
    from kohya_wrap.review.loracheck import LoraCheck

FAMILIES = ("sd15", "sdxl", "flux")


@dataclass(frozen=True)
class ImportResult:
    """The imported settings, our config file's text, where it was written, and what validation says."""

    imported: Imported
    text: str
    output: Path | None
    problems: tuple[str, ...]  # `section.key: message` lines a user must fix before training
    config: Config | None  # None while problems remain


@dataclass(frozen=True)
class ExportResult:
    written: tuple[Path, ...]
    not_carried: tuple[str, ...]


def read_settings(path: Path, family: str | None = None) -> Imported:
    """Another tool's settings file, recognised by its content, as our config document and key fates."""
    from kohya_wrap.interop.importers import civitai, detect, kohya_ss, sd_scripts

    if family is not None and family not in FAMILIES:
        raise ConfigError(f"import: --family {family} is not one of {', '.join(FAMILIES)}")
    fmt, content = detect.detect(path)
    if fmt == "kohya_ss":
        return kohya_ss.read_kohya_ss(path, content)
    if fmt == "civitai":
        return civitai.read_civitai(path, content)
    if fmt == "sd_scripts_toml":
        return sd_scripts.read_training_toml(path, family)
    return sd_scripts.read_command_line(path, family)


def import_config(
    path: Path, output: Path | None = None, strict: bool = False, family: str | None = None
) -> ImportResult:
    """Read `path`, build our config and check it; write it to `output` (never over an existing file).

    With `strict`, any setting that was not carried over (or a secret in the file) refuses the import.
    """
    from kohya_wrap.config.presets import validate
    from kohya_wrap.files import write_new_file

    if output is not None and output.exists():
        raise ConfigError(f"import: {output} already exists; choose another name or delete it first")
    imported = read_settings(path, family)
    if strict and imported.not_carried:
        raise ConfigError(
            *(f"import: {fate.describe()}" for fate in imported.not_carried),
            f"import: --strict: {len(imported.not_carried)} key(s) of {path.name} not carried over; nothing written",
        )
    header = (
        f"Imported by kohya-wrap from {imported.format} {path.name}.\n"
        "Each value names the key it came from; check them, then `kohya-wrap validate` this file."
    )
    notes = "".join(f"\nTo check: {note}" for note in imported.notes)
    text = config_toml(imported, header + notes)
    try:
        config: Config | None = validate(imported.doc)
        problems: tuple[str, ...] = ()
    except ConfigError as exc:
        config, problems = None, exc.lines
    if output is not None:
        try:
            write_new_file(output, text)
        except FileExistsError:
            raise ConfigError(f"import: {output} already exists; choose another name or delete it first") from None
    return ImportResult(imported, text, output, problems, config)


def export_config(config: Config, to: str, output: Path) -> ExportResult:
    """Write `config` in another tool's format: `kohya_ss` (a GUI config JSON, plus a dataset TOML beside it
    when the folders are not kohya's `<repeats>_<name>` folders of one parent). Never overwrites."""
    from kohya_wrap.files import write_new_file
    from kohya_wrap.interop.export import to_kohya_ss

    if to != "kohya_ss":
        raise ConfigError(f"export: --to {to} is not supported; use --to kohya_ss")
    dataset_path = output.with_name(output.stem + ".dataset.toml")
    exported = to_kohya_ss(config, dataset_path.resolve())
    targets = [output] + ([dataset_path] if exported.dataset_toml is not None else [])
    for target in targets:
        if target.exists():
            raise ConfigError(f"export: {target} already exists; choose another name or delete it first")
    written = []
    try:
        if exported.dataset_toml is not None:
            write_new_file(dataset_path, exported.dataset_toml)
            written.append(dataset_path)
        write_new_file(output, json.dumps(exported.settings, indent=2, ensure_ascii=False) + "\n")
        written.append(output)
    except FileExistsError as exc:
        for path in written:
            path.unlink()
        raise ConfigError(f"export: {exc.filename} already exists; choose another name or delete it first") from None
    return ExportResult(tuple(written), exported.not_carried)


def check_loras(run_dir: Path) -> list[LoraCheck]:
    """Whether each LoRA RUN_DIR saved will load in ComfyUI and diffusers (key names, the base model's layers,
    diffusers' converter when it is installed); refused with one line when it is not a run folder."""
    from kohya_wrap.review.loracheck import check_lora
    from kohya_wrap.review.outputs import collect
    from kohya_wrap.train.layout import RunLayout
    from kohya_wrap.train.runs import read_record, run_config

    layout = RunLayout(run_dir.resolve())
    record = read_record(layout)
    cfg = run_config(layout)
    base = Path(cfg.model.base).expanduser()
    return [check_lora(lora.path, cfg.model.family, base) for lora in collect(layout, record.name, record.epochs)]
