"""A project for the web app's tests and benchmark: a config over fake sd-scripts, a dataset, finished runs."""

from __future__ import annotations

import os
from pathlib import Path

import fake_sd

from kohya_wrap.commands.train import check_training, create, load, run
from kohya_wrap.train.view import SilentView

LOGS = Path(__file__).parent / "fixtures" / "logs"
# The recorded SD1.5 run (stdout then stderr) the fake sd-scripts replays: 2 epochs, 8 steps.
SIMPLE = os.pathsep.join(str(LOGS / f"sd15_accelerate_console_log_simple.{s}.txt") for s in ("stdout", "stderr"))


def write_project(root: Path) -> Path:
    """A config over a fake sd-scripts and a captioned dataset folder `5_zdm`; returns the config path."""
    return fake_sd.write_project(root, caption="zdm, 1boy, green_hair", trigger_word="zdm")


def train(config: Path, *overrides: str) -> Path:
    """Train `config` to the end with the fake sd-scripts (FAKE_SD_LOG must be set); returns the run folder."""
    layout = create(check_training(load(config, overrides)))
    run(layout, SilentView())
    return layout.root


def form_values(root: Path) -> dict[str, str]:
    """New-run form fields over the sd15-character preset that make the project's config train here."""
    return {
        "model.base": str(root / "model"),
        "dataset.dirs": f'[{{ path = "{root / "5_zdm"}" }}]',
        "dataset.resolution": "64",
        "dataset.enable_bucket": "false",
        "training.epochs": "2",
        "save.output_name": "web_lora",
        "run.runs_dir": str(root / "runs"),
        "run.sd_scripts_dir": str(root / "sd-scripts"),
        "run.python": str(root / "fake-python"),
    }
