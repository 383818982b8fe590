"""A fake sd-scripts setup for fast tests: a checkout with the script names and a replaying interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

REPLAY = Path(__file__).with_name("replay.py")


def install(root: Path) -> tuple[Path, Path]:
    """(sd-scripts folder, interpreter) under `root`: use them as run.sd_scripts_dir and run.python."""
    sd = root / "sd-scripts"
    sd.mkdir()
    (sd / "train_network.py").write_text("")
    wrapper = root / "fake-python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{REPLAY}" "$@"\n')
    wrapper.chmod(0o755)
    return sd, wrapper


def captioned_images(folder: Path, caption: str, count: int = 4) -> Path:
    """`count` 64 px PNGs with a caption each."""
    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (64, 64), (i * 60, 0, 0)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(caption)
    return folder


def write_project(
    root: Path, output_name: str = "e2e_lora", caption: str = "zdm, 1boy", trigger_word: str | None = None
) -> Path:
    """A fake sd-scripts, a captioned dataset folder `5_zdm`, a `model` folder and `lora.toml` over them under `root`.

    Returns the config path; the config's paths other than the fake's are relative to `root`.
    """
    sd, wrapper = install(root)
    captioned_images(root / "5_zdm", caption)
    (root / "model").mkdir()
    tagging = "" if trigger_word is None else f'[tagging]\ntrigger_word = "{trigger_word}"\n'
    config = root / "lora.toml"
    config.write_text(f"""
[model]
family = "sd15"
base = "model"
[dataset]
dirs = [{{ path = "5_zdm" }}]
resolution = 64
enable_bucket = false
{tagging}[optimizer]
type = "AdamW"
[training]
epochs = 2
batch_size = 1
[save]
output_name = "{output_name}"
[run]
runs_dir = "runs"
sd_scripts_dir = "{sd}"
python = "{wrapper}"
""")
    return config


def start_training(project: Path, config: str = "lora.toml") -> tuple[subprocess.Popen[str], Path]:
    """`kohya-wrap train` in its own process (FAKE_SD_LOG set), the fake waiting after epoch 1 until stopped.

    Returns the process and its run folder once epoch 1 is saved.
    """
    env = dict(os.environ, FAKE_SD_HANG="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kohya_wrap", "train", config],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for run in (project / "runs").glob("*-*"):
            if any((run / "output").glob("*-000001.safetensors")):
                return proc, run
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"no epoch was saved: {proc.communicate()}")
