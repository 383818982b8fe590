"""Start-up time of `kohya-wrap --help` and `validate` as ratios to `python -c pass` (interleaved medians).

usage: python bench/startup.py [--runs N] [--out bench/results/startup.md]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

GOALS = {"--help": 4.0, "validate": 12.0}


def make_config(folder: Path) -> Path:
    """SeaArt's walkthrough dataset: 7 images of 512 px in `20_zdm 1boy`, captioned."""
    images = folder / "20_zdm 1boy"
    images.mkdir()
    for i in range(7):
        Image.new("RGB", (512, 512), (i * 30, 90, 40)).save(images / f"{i:02d}.png")
        (images / f"{i:02d}.txt").write_text("zdm, 1boy, green_hair, suspenders")
    (folder / "model.safetensors").write_bytes(b"")
    config = folder / "zdm.toml"
    config.write_text(
        'preset = "sd15-character"\n[model]\nbase = "model.safetensors"\n'
        '[dataset]\ndirs = [{ path = "20_zdm 1boy" }]\n[tagging]\ntrigger_word = "zdm"\n'
    )
    return config


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp))
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "--help": [sys.executable, "-m", "kohya_wrap", "--help"],
            "validate": [sys.executable, "-m", "kohya_wrap", "validate", str(config)],
        }
        for argv in commands.values():  # warm the file cache
            timed(argv)
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                samples[name].append(timed(argv))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians["python -c pass"]
    lines = [
        "# Start-up time (medians of interleaved runs)",
        "",
        f"Command: `python bench/startup.py --runs {args.runs}`",
        "",
        "| command | median | ratio to `python -c pass` | goal | met |",
        "|---|---|---|---|---|",
    ]
    for name, median in medians.items():
        goal = GOALS.get(name)
        ratio = median / base
        met = "" if goal is None else ("yes" if ratio <= goal else "NO")
        lines.append(
            f"| `{name}` | {median * 1000:.0f} ms | {ratio:.2f}× | {'' if goal is None else f'≤ {goal:g}×'} | {met} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
