"""Run folders: created whole or not at all, never overwritten; run.json says what happened."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import tomli_w

from kohya_wrap.config.models import Config
from kohya_wrap.config.presets import LoadedConfig
from kohya_wrap.data.dataset import StepPlan
from kohya_wrap.errors import ConfigError, RunError
from kohya_wrap.files import write_atomic
from kohya_wrap.train.layout import RunLayout
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
    """Write every file into a hidden sibling folder, then rename it into place in one step."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
        if final.exists():
            raise FileExistsError(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
    layout = RunLayout(output)
    rendered = render(loaded.config, layout, plan)
    _materialise(output, rendered_files(layout, loaded.config, rendered, new_record(loaded.config, rendered, plan)))
    return layout


def runs_dir(cfg: Config) -> Path:
    return Path(cfg.run.runs_dir).expanduser().resolve()


def create_run(loaded: LoadedConfig, plan: StepPlan, when: dt.datetime | None = None) -> RunLayout:
    """A new `runs/<output_name>-<YYYYmmdd-HHMMSS>[-N]/` with every rendered file in it."""
    cfg = loaded.config
    stamp = (when or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = runs_dir(cfg)
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
    known = RunRecord.__dataclass_fields__
    return RunRecord(**{k: v for k, v in data.items() if k in known})


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
