"""Where each file of a run folder lives (one place, so render, launch, runs and report agree)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kohya_wrap.config.models import Config


def runs_dir(cfg: Config) -> Path:
    """The folder that holds a config's run folders (run.runs_dir, absolute)."""
    return Path(cfg.run.runs_dir).expanduser().resolve()


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def dataset_toml(self) -> Path:
        return self.root / "dataset.toml"

    @property
    def train_toml(self) -> Path:
        return self.root / "train.toml"

    @property
    def prompts(self) -> Path:
        # JSON, not sd-scripts' `--` line format: every character of a prompt survives exactly.
        return self.root / "prompts.json"

    @property
    def accelerate(self) -> Path:
        return self.root / "accelerate.yaml"

    @property
    def command(self) -> Path:
        return self.root / "command.txt"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def logging_dir(self) -> Path:
        return self.root / "logs"

    @property
    def samples_dir(self) -> Path:
        return self.output_dir / "sample"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"
