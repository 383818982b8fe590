"""Getting started (presets, init, schema, doctor) as plain functions: no click, no printing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kohya_wrap.errors import ConfigError

if TYPE_CHECKING:
    from kohya_wrap.config.presets import LoadedConfig
    from kohya_wrap.train.doctor import Check

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


@dataclass(frozen=True)
class Preset:
    """A preset file under templates/, by name."""

    name: str
    summary: str  # the preset file's first comment line


def presets() -> list[Preset]:
    """Every preset (templates/*.toml), by name."""
    from kohya_wrap.config.presets import list_presets

    return [Preset(name, summary) for name, summary in list_presets()]


@dataclass(frozen=True)
class NewConfig:
    """A config started from a preset; `written` is where it was saved (None: not saved)."""

    text: str
    written: Path | None


def init(preset: str, output: Path | None = None) -> NewConfig:
    """A config that starts from PRESET, saved to `output` when given (never over an existing file)."""
    from kohya_wrap.config.presets import preset_path
    from kohya_wrap.files import creatable_problem, write_new_file

    preset_path(preset)  # an unknown name fails here, with a suggestion
    text = (
        f"# Started from the {preset} preset; `preset` pulls in its values, keys below override them.\n"
        f'preset = "{preset}"\n\n' + INIT_BODY
    )
    if output is None:
        return NewConfig(text, None)
    if output.exists():
        raise ConfigError(f"init: {output} already exists; choose another name or delete it first")
    if problem := creatable_problem(output):
        raise ConfigError(f"init: {problem}; choose another path")
    write_new_file(output, text)
    return NewConfig(text, output)


def schema() -> dict[str, Any]:
    """The config file's JSON schema."""
    from kohya_wrap.config.models import Settings

    return Settings.model_json_schema()


@dataclass(frozen=True)
class Diagnosis:
    """Every check in the order a user would fix them; the run can start only when none failed."""

    checks: tuple[Check, ...]

    @property
    def failed(self) -> tuple[Check, ...]:
        """The checks that stop a run."""
        return tuple(c for c in self.checks if c.level == "fail")


def doctor(loaded: LoadedConfig | None = None) -> Diagnosis:
    """Whether a run can start here: sd-scripts, its interpreter, GPU, and (with a config) model files and disk."""
    from kohya_wrap.train.doctor import diagnose

    return Diagnosis(tuple(diagnose(loaded.config if loaded is not None else None)))
