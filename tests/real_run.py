"""Two real CPU trainings (`kohya-wrap train`, random SD1.5 model) for the report, estimate and preview tests.

Training costs about a minute on the 2-core CI machines, so the runs are made once per session, on first
use, whichever test module asks first (conftest.py is not the place: only these modules need them).
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_e2e_train import write_config

ONE_PROMPT = '[{ text = "e2etok, a red square", width = 64, height = 64, steps = 2, cfg = 7.0, seed = 1 }]'


@dataclass(frozen=True)
class RealRuns:
    config: Path
    calibration: Path  # 1 epoch, 1 sample prompt: what a user's earlier run on this machine would be
    run: Path  # 2 epochs (4 steps each), 2 sample prompts
    run_seconds: float  # wall time of `kohya-wrap train` for `run`
    run_stdout: str


_made: dict[str, RealRuns] = {}


def _train(config: Path, *overrides: str) -> tuple[float, str]:
    argv = [sys.executable, "-m", "kohya_wrap", "train", str(config)]
    for override in overrides:
        argv += ["--set", override]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        pytest.fail(f"kohya-wrap train failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}", pytrace=False)
    return seconds, done.stdout


def _new_run(runs: Path, before: set[Path]) -> Path:
    (run,) = {p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")} - before
    return run


def real_runs(tmp_path_factory: pytest.TempPathFactory, assets: object) -> RealRuns:
    """The calibration run, then the 2-epoch run, in one runs folder (built on the first call)."""
    if "runs" not in _made:
        root = tmp_path_factory.mktemp("real-runs")
        config = write_config(root, assets, assets.sd15_model)  # type: ignore[attr-defined]
        runs = root / "runs"
        _train(config, "training.epochs=1", f"sampling.prompts={ONE_PROMPT}", "save.output_name=calibration")
        calibration = _new_run(runs, set())
        seconds, stdout = _train(config)
        run = _new_run(runs, {calibration})
        _made["runs"] = RealRuns(config, calibration, run, seconds, stdout)
    return _made["runs"]
