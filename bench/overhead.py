"""Wall time of `kohya-wrap train` vs launching the same rendered files with accelerate directly.

Same tiny real run (random SD1.5, 4 images of 64 px, 2 epochs, 2 samples per epoch) on the CPU,
interleaved, several times; needs the sd-scripts checkout and its requirements.
usage: python bench/overhead.py [--runs N] [--out bench/results/overhead.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import build_e2e_assets  # noqa: E402
from test_e2e_train import write_config  # noqa: E402

from kohya_wrap.config.presets import load_config  # noqa: E402
from kohya_wrap.data.dataset import plan_steps, scan  # noqa: E402
from kohya_wrap.train.launch import plan_training  # noqa: E402
from kohya_wrap.train.runs import write_rendered_folder  # noqa: E402

GOAL = 1.01


def make_config(folder: Path) -> Path:
    """The real-training test's config: random SD1.5, 4 images of 64 px, 2 epochs, 2 sample prompts."""
    assets = build_e2e_assets()
    return write_config(folder, assets, assets.sd15_model)


def run_wrapper(config: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "kohya_wrap", "train", str(config)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def run_direct(config: Path, folder: Path) -> float:
    loaded = load_config(config)
    plan = plan_steps(loaded.config, scan(loaded.config))
    layout = write_rendered_folder(folder, loaded, plan)
    launch = plan_training(loaded.config, layout, "train_network.py")
    start = time.perf_counter()
    subprocess.run(
        launch.argv,
        cwd=launch.cwd,
        env={**os.environ, **launch.env},
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def row(name: str, times: list[float]) -> str:
    return f"| {name} | {statistics.median(times):.2f} s | {', '.join(f'{t:.1f}' for t in times)} |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    wrapped: list[float] = []
    direct: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp))
        run_direct(config, Path(tmp) / "warm")  # first run pays the file cache
        for i in range(args.runs):
            wrapped.append(run_wrapper(config))
            direct.append(run_direct(config, Path(tmp) / f"direct-{i}"))
    ratio = statistics.median(wrapped) / statistics.median(direct)
    text = "\n".join(
        [
            "# Overhead of `kohya-wrap train` over a direct `accelerate launch`",
            "",
            f"Command: `python bench/overhead.py --runs {args.runs}` (CPU, random SD1.5, 4 images of 64 px, 2 epochs,",
            "2 samples per epoch; the same rendered files; runs interleaved).",
            "",
            "| | median wall | runs (s) |",
            "|---|---|---|",
            row("direct `accelerate launch`", direct),
            row("`kohya-wrap train`", wrapped),
            "",
            f"Ratio: **{ratio:.3f}** (goal ≤ {GOAL}; {'met' if ratio <= GOAL else 'NOT met'}).",
            "",
        ]
    )
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
