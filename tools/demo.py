"""`make demo`: a real `kohya-wrap train` run with nothing to download, on a random-weight SD1.5 model.

The first run builds the tokenizers, the random model and a few captioned images into .demo-cache/ (about a
minute; only PyPI is needed); later runs reuse them. Set KOHYA_WRAP_DEMO_CACHE to put the cache elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from e2e_assets import BuildFailed, build_assets, e2e_config_text

REPO_ROOT = Path(__file__).resolve().parent.parent
SD_SCRIPTS = REPO_ROOT / "vendor" / "sd-scripts"
CACHE_ENV = "KOHYA_WRAP_DEMO_CACHE"


def config_text(cache: Path, tokenizers: Path, model: Path, images: Path) -> str:
    """Two tiny epochs at 64 px with a sample per epoch: the whole pipeline in about a minute on a CPU."""
    header = (
        "# Written by `make demo`: a random-weight SD1.5 model, so the samples are noise.\n"
        "# Full precision: sd-scripts' SD1.5 text encoder cannot run bf16 on a CPU, and the model is tiny.\n\n"
    )
    return e2e_config_text(model, tokenizers, images, cache / "runs", output_name="demo", header=header)


def say(line: str) -> None:
    print(f"demo: {line}", flush=True)


def main() -> int:
    """Build (once), train, print the report's path; the exit code is `kohya-wrap train`'s."""
    started = time.monotonic()
    cache = Path(os.environ.get(CACHE_ENV) or REPO_ROOT / ".demo-cache").resolve()
    if not (SD_SCRIPTS / "train_network.py").is_file():
        say(f"the sd-scripts checkout is missing ({SD_SCRIPTS.relative_to(REPO_ROOT)}); run `make setup` first")
        return 2
    say("the model's weights are RANDOM: the samples will be noise; this shows the pipeline, not a LoRA")
    say(f"building the tokenizers, a random SD1.5 model and 4 captioned images into {cache} (once)")
    try:
        assets = build_assets(cache)
    except BuildFailed as exc:
        say(str(exc))
        return 1
    say(f"inputs ready after {time.monotonic() - started:.0f} s; training (2 epochs, samples after each)")
    config = cache / "demo.toml"
    config.write_text(config_text(cache, assets.tokenizers, assets.sd15_model, assets.images), encoding="utf-8")
    runs = cache / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    done = subprocess.run([sys.executable, "-m", "kohya_wrap", "train", str(config)], check=False)
    new = sorted(p for p in (set(runs.iterdir()) if runs.is_dir() else set()) - before if p.is_dir())
    report = new[-1] / "report" / "index.html" if new else None
    if report is not None and report.is_file():
        say(f"report: {report}")
        say("open it in a browser; the loss curve and the samples come from random weights (noise)")
    say(f"done in {time.monotonic() - started:.0f} s (exit code {done.returncode})")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
