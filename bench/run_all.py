"""Run every benchmark and write its result into bench/results/ (`make bench`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {
    "startup.py": ["--out", str(HERE / "results" / "startup.md")],
    "overhead.py": ["--out", str(HERE / "results" / "overhead.md")],
    "queue_bench.py": ["--out", str(HERE / "results" / "queue.md")],
    "ui_bench.py": ["--out", str(HERE / "results" / "ui.md")],
    "ray_bench.py": ["--out", str(HERE / "results" / "ray.md")],
    # About 9 minutes on 2 cores: a realistic-size ViT tagger against sd-scripts' own tagger script.
    "tagger_bench.py": ["--out", str(HERE / "results" / "tagger.md")],
}


def main() -> int:
    (HERE / "results").mkdir(exist_ok=True)
    failed = 0
    for script, args in BENCHES.items():
        print(f"== {script}", flush=True)
        failed |= subprocess.run([sys.executable, str(HERE / script), *args]).returncode
    return failed


if __name__ == "__main__":
    sys.exit(main())
