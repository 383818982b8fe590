"""A stand-in for `python -m accelerate.commands.launch <script> …` that replays a recorded sd-scripts log.

Used as `run.python` (through a small wrapper) so the runner is tested without models. It reads the
run's train.toml like sd-scripts would, rewrites the recorded output folder and LoRA name to this
run's, prints the log line by line, and creates each file the log says was saved.
Environment: FAKE_SD_LOG (the logs to replay, joined with os.pathsep: e.g. stdout then stderr),
FAKE_SD_EXIT (exit code, default 0),
FAKE_SD_HANG=1 (after the first saved state, wait for a signal like a long epoch would),
FAKE_SD_ARGV (a file to append the received argv to).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import tomllib
from pathlib import Path

CHECKPOINT = re.compile(r"saving checkpoint: (\S+\.safetensors)")
STATE = re.compile(r"save train state to (\S+)/train_state\.json at epoch (\d+) step (\d+)")


def main() -> int:
    args = sys.argv[1:]
    if argv_file := os.environ.get("FAKE_SD_ARGV"):
        with open(argv_file, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(args) + "\n")
    script_at = next(i for i, a in enumerate(args) if a.endswith(".py"))
    train_toml = args[args.index("--config_file", script_at) + 1]
    doc = tomllib.loads(Path(train_toml).read_text("utf-8"))
    flat = {k: v for section in doc.values() for k, v in section.items()}
    out, name = Path(flat["output_dir"]), flat["output_name"]
    text = "".join(Path(p).read_text("utf-8") for p in os.environ["FAKE_SD_LOG"].split(os.pathsep))
    recorded = re.search(r"saving checkpoint: (\S+)/([^/\s]+?)-\d{6}\.safetensors", text)
    if recorded:
        text = text.replace(recorded.group(1), str(out)).replace(recorded.group(2), name)
    hang = os.environ.get("FAKE_SD_HANG") == "1"
    for line in text.splitlines(keepends=True):
        sys.stdout.write(line)
        sys.stdout.flush()
        if match := CHECKPOINT.search(line):
            Path(match.group(1)).parent.mkdir(parents=True, exist_ok=True)
            Path(match.group(1)).write_bytes(b"fake lora")
        if match := STATE.search(line):
            state = Path(match.group(1))
            state.mkdir(parents=True, exist_ok=True)
            (state / "train_state.json").write_text(
                json.dumps({"current_epoch": int(match.group(2)), "current_step": int(match.group(3))})
            )
            if hang:
                time.sleep(3600)  # interrupted by the test's SIGINT (KeyboardInterrupt)
        if "model saved." in line:
            final = out / f"{name}.safetensors"
            if not final.exists():
                final.write_bytes(b"fake lora")
        time.sleep(0.0005)
    return int(os.environ.get("FAKE_SD_EXIT", "0"))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.exit(main())
