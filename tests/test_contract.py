"""Contract tests: our view of sd-scripts' arguments matches the pinned checkout's real parsers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DUMP_TOOL = REPO_ROOT / "tools" / "dump_sd_args.py"
COMMITTED_SPEC = REPO_ROOT / "kohya_wrap" / "sd_scripts_args.json"


def load_dump_tool() -> ModuleType:
    """tools/ is not a package; load the script as a module to reuse its diff wording."""
    spec = importlib.util.spec_from_file_location("dump_sd_args", DUMP_TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.sd_scripts
def test_committed_arg_spec_matches_the_checkout(sd_scripts_dir: Path, tmp_path: Path) -> None:
    regenerated = tmp_path / "sd_scripts_args.json"
    done = subprocess.run(
        [sys.executable, str(DUMP_TOOL), "--sd-scripts", str(sd_scripts_dir), "--out", str(regenerated)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    committed_text = COMMITTED_SPEC.read_text(encoding="utf-8")
    regenerated_text = regenerated.read_text(encoding="utf-8")
    if committed_text != regenerated_text:
        changes = load_dump_tool().describe_differences(
            json.loads(committed_text), json.loads(regenerated_text)
        )
        pytest.fail(
            "kohya_wrap/sd_scripts_args.json differs from the sd-scripts checkout; run `make sync-args` and "
            "review:\n" + "\n".join(changes or ["(same data, different formatting)"]),
            pytrace=False,
        )
