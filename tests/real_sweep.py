"""A real 2×2 sweep (scheduler × dim, 1 epoch each, random SD1.5 model on the CPU) through `queue run`.

Four tiny trainings cost a few minutes on the 2-core CI machines, so the sweep is made once per session on
first use; the queue tests and the compare tests read the same runs.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_e2e_train import write_config

SWEEP_NAME = "sched-dim"
GRID = ("optimizer.scheduler=constant,cosine", "network.dim=4,8")


@dataclass(frozen=True)
class RealSweep:
    runs_dir: Path
    name: str
    sweep_stdout: str
    queue_stdout: str
    queue_exit_code: int


_made: dict[str, RealSweep] = {}


def _kohya_wrap(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kohya_wrap", *args], cwd=cwd, capture_output=True, text=True, timeout=1800, check=False
    )


def real_sweep(tmp_path_factory: pytest.TempPathFactory, assets: object) -> RealSweep:
    """Queue the 2×2 sweep and run the queue until it is empty (built on the first call)."""
    if "sweep" not in _made:
        root = tmp_path_factory.mktemp("real-sweep")
        config = write_config(root, assets, assets.sd15_model, epochs=1)  # type: ignore[attr-defined]
        grid = [arg for axis in GRID for arg in ("--grid", axis)]
        queued = _kohya_wrap(root, "sweep", str(config), *grid, "--name", SWEEP_NAME)
        if queued.returncode != 0:
            pytest.fail(f"kohya-wrap sweep failed:\n{queued.stdout}\n{queued.stderr}", pytrace=False)
        ran = _kohya_wrap(root, "queue", "run", "--runs-dir", str(root / "runs"), "--until-empty")
        _made["sweep"] = RealSweep(root / "runs", SWEEP_NAME, queued.stdout, ran.stdout + ran.stderr, ran.returncode)
    return _made["sweep"]
