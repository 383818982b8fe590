"""Run folders: created whole or not at all, never overwritten; run.json says what happened."""

from __future__ import annotations

import datetime as dt
import json
import os
import tomllib
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import tomli_w

from kohya_wrap.config.models import Config
from kohya_wrap.config.presets import LoadedConfig, validate
from kohya_wrap.data.dataset import StepPlan
from kohya_wrap.errors import ConfigError, RunError
from kohya_wrap.files import creatable_problem, write_atomic, write_new_folder
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.train.layout import runs_dir as runs_dir  # where it lived before; callers still import it here
from kohya_wrap.train.render import Rendered, config_hash, render

Status = Literal["planned", "running", "finished", "failed", "interrupted"]
RUN_SCHEMA = 1


@dataclass(frozen=True)
class RunRecord:
    """What run.json holds."""

    status: Status
    name: str
    family: str
    script: str
    config_hash: str
    total_steps: int
    epochs: int
    created: str
    started: str | None = None
    ended: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    resumed_from: str | None = None
    attempts: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    dataset_hash: str | None = None
    # The `kohya-wrap` process training the run while its status is "running" (`host/pid/start`), so
    # another front-end can stop it the way Ctrl-C would; cleared when it ends.
    trainer: str | None = None
    schema: int = RUN_SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, ensure_ascii=False) + "\n"


def now_iso() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def resolved_config_toml(cfg: Config) -> str:
    doc = cfg.model_dump(mode="json", exclude_none=True)
    return "# The fully resolved config of this run (preset + file + overrides + defaults).\n" + tomli_w.dumps(doc)


def rendered_files(layout: RunLayout, cfg: Config, rendered: Rendered, record: RunRecord) -> dict[str, str]:
    files = rendered.files(layout)
    files[layout.config.name] = resolved_config_toml(cfg)
    files[layout.run_json.name] = record.to_json()
    return files


def _materialise(final: Path, files: dict[str, str]) -> None:
    """Create the run folder with every file in it, whole or not at all."""
    write_new_folder(final, {name: text.encode("utf-8") for name, text in files.items()})


def new_record(cfg: Config, rendered: Rendered, plan: StepPlan) -> RunRecord:
    return RunRecord(
        status="planned",
        name=cfg.output_name,
        family=cfg.model.family,
        script=rendered.script,
        config_hash=config_hash(cfg),
        total_steps=plan.total_steps,
        epochs=plan.epochs,
        created=now_iso(),
    )


def write_rendered_folder(output: Path, loaded: LoadedConfig, plan: StepPlan) -> RunLayout:
    """Render into a new folder `output` (refused when it exists)."""
    output = output.resolve()
    if output.exists():
        raise ConfigError(f"render: {output} already exists; choose a new folder (nothing is overwritten)")
    if problem := creatable_problem(output):
        raise ConfigError(f"render: {problem}; choose another folder")
    layout = RunLayout(output)
    rendered = render(loaded.config, layout, plan)
    _materialise(output, rendered_files(layout, loaded.config, rendered, new_record(loaded.config, rendered, plan)))
    return layout


def create_run(loaded: LoadedConfig, plan: StepPlan, when: dt.datetime | None = None) -> RunLayout:
    """A new `runs/<output_name>-<YYYYmmdd-HHMMSS>[-N]/` with every rendered file in it."""
    cfg = loaded.config
    stamp = (when or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = runs_dir(cfg)
    if base.exists() and not base.is_dir():
        raise RunError(f"run.runs_dir: {base} is a file; set run.runs_dir to a folder")
    problem = creatable_problem(base)
    if problem is None and base.is_dir() and not os.access(base, os.W_OK | os.X_OK):
        problem = f"cannot write in {base} (permission denied)"
    if problem:
        raise RunError(f"run.runs_dir: {problem}; set run.runs_dir to a folder you can write in")
    for n in range(1, 1000):
        name = f"{cfg.output_name}-{stamp}" + (f"-{n}" if n > 1 else "")
        layout = RunLayout(base / name)
        if layout.root.exists():
            continue
        rendered = render(cfg, layout, plan)
        try:
            _materialise(layout.root, rendered_files(layout, cfg, rendered, new_record(cfg, rendered, plan)))
        except FileExistsError:
            continue
        return layout
    raise RunError(f"run.runs_dir: cannot find a free run folder name in {base}")


def read_record(layout: RunLayout) -> RunRecord:
    try:
        data: dict[str, Any] = json.loads(layout.run_json.read_text("utf-8"))
    except FileNotFoundError:
        raise RunError(f"run: {layout.root} is not a run folder (no run.json)") from None
    except (OSError, ValueError) as exc:
        raise RunError(f"run: cannot read {layout.run_json}: {exc}") from None
    if problem := _record_problem(data):
        raise RunError(f"run: {layout.run_json} is not a run record kohya-wrap can read ({problem})")
    known = RunRecord.__dataclass_fields__
    return RunRecord(**{k: v for k, v in data.items() if k in known})


def _record_problem(data: object) -> str | None:
    """What makes parsed run.json content unusable as a RunRecord (missing fields, wrong types), or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    hints = typing.get_type_hints(RunRecord)
    for name, spec in RunRecord.__dataclass_fields__.items():
        if name not in data:
            if spec.default is MISSING and spec.default_factory is MISSING:
                return f"no {name}"
            continue
        value, hint = data[name], hints[name]
        origin = typing.get_origin(hint)
        if origin is typing.Literal:
            if value not in typing.get_args(hint):
                return f"{name} is {value!r}"
            continue
        # `str | None` accepts either member; `dict[str, str]` is checked as a dict.
        accepted = typing.get_args(hint) if origin in (types.UnionType, typing.Union) else (origin or hint,)
        if isinstance(value, bool) or not isinstance(value, accepted):
            return f"{name} is {value!r}"
    return None


def read_config_toml(layout: RunLayout) -> dict[str, Any]:
    """The run's config.toml (the resolved config it was created with), as a document."""
    try:
        return tomllib.loads(layout.config.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RunError(f"run: cannot read {layout.config}: {exc}") from None


def run_config(layout: RunLayout) -> Config:
    """The run's config, validated again (so a hand-edited config.toml is checked like any other)."""
    return validate(read_config_toml(layout))


def sample_prompts(layout: RunLayout) -> list[dict[str, Any]]:
    """The run's sample prompts as rendered for sd-scripts (prompts.json); empty when none or unreadable."""
    try:
        loaded = json.loads(layout.prompts.read_text("utf-8"))
    except (OSError, ValueError):
        return []
    return [p for p in loaded if isinstance(p, dict)] if isinstance(loaded, list) else []


def update_record(layout: RunLayout, record: RunRecord, **changes: Any) -> RunRecord:
    updated = replace(record, **changes)
    write_atomic(layout.run_json, updated.to_json())
    return updated


def list_runs(base: Path) -> list[tuple[RunLayout, RunRecord | None]]:
    """Every run folder under `base`, oldest first; a folder with a broken run.json has record None."""
    if not base.is_dir():
        return []
    result: list[tuple[RunLayout, RunRecord | None]] = []
    for path in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        layout = RunLayout(path)
        if not layout.run_json.exists():
            continue
        try:
            result.append((layout, read_record(layout)))
        except RunError:
            result.append((layout, None))
    return result
