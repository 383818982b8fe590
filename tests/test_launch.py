"""Tests for kohya_wrap.train.launch: which checkout and interpreter, the exact command, running a child."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import fake_sd
import pytest

from kohya_wrap.config.models import Config
from kohya_wrap.config.presets import validate
from kohya_wrap.errors import SdScriptsError
from kohya_wrap.train.launch import (
    Child,
    LaunchPlan,
    first_gpu,
    git_head,
    plan_training,
    require_script,
    run,
    sd_python,
    sd_scripts_dir,
)
from kohya_wrap.train.layout import RunLayout

LOGS = Path(__file__).parent / "fixtures" / "logs"
SIMPLE = os.pathsep.join(str(LOGS / f"sd15_accelerate_console_log_simple.{s}.txt") for s in ("stdout", "stderr"))


def config(tmp_path: Path, **run: object) -> Config:
    return validate(
        {
            "model": {"family": "sd15", "base": str(tmp_path / "model.safetensors")},
            "dataset": {"dirs": [{"path": str(tmp_path / "data")}]},
            "run": run,
        }
    )


def test_first_gpu_is_the_first_listed_and_none_for_all(tmp_path: Path) -> None:
    assert first_gpu(config(tmp_path)) is None
    assert first_gpu(config(tmp_path, gpu_ids=[2, 0])) == 2


def test_interpreter_and_checkout_come_from_the_config_else_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOHYA_WRAP_SD_SCRIPTS", str(tmp_path / "bundled"))
    assert sd_python(None) == sys.executable
    assert sd_python(config(tmp_path)) == sys.executable
    assert sd_scripts_dir(config(tmp_path)) == tmp_path / "bundled"
    chosen = config(tmp_path, python="/opt/py/bin/python", sd_scripts_dir=str(tmp_path / "mine"))
    assert sd_python(chosen) == "/opt/py/bin/python"
    assert sd_scripts_dir(chosen) == tmp_path / "mine"


def test_a_missing_script_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    cfg = config(tmp_path, sd_scripts_dir=str(tmp_path / "sd"))
    with pytest.raises(SdScriptsError) as caught:
        require_script(cfg, "train_network.py")
    assert caught.value.lines == (
        f"run.sd_scripts_dir: no train_network.py in {tmp_path / 'sd'}; run `make setup` (it fetches the "
        "vendor/sd-scripts submodule) or set run.sd_scripts_dir to an sd-scripts checkout",
    )
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "train_network.py").write_text("")
    assert require_script(cfg, "train_network.py") == tmp_path / "sd"


def test_the_command_is_accelerate_launch_with_the_rendered_files(tmp_path: Path) -> None:
    sd, python = fake_sd.install(tmp_path)
    cfg = config(tmp_path, sd_scripts_dir=str(sd), python=str(python), cpu_threads_per_process=3)
    layout = RunLayout(tmp_path / "run")
    plan = plan_training(cfg, layout, "train_network.py", resume_state=layout.output_dir / "zdm-state")
    assert plan.argv == (
        str(python),
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(layout.accelerate),
        "--num_cpu_threads_per_process",
        "3",
        "train_network.py",
        "--config_file",
        str(layout.train_toml),
        "--dataset_config",
        str(layout.dataset_toml),
        "--resume",
        str(layout.output_dir / "zdm-state"),
    )
    assert plan.cwd == sd.resolve()
    assert plan.env["PYTHONUNBUFFERED"] == "1" and plan.env["PYTHONIOENCODING"] == "utf-8"


def test_command_text_can_be_pasted_into_a_shell(tmp_path: Path) -> None:
    plan = LaunchPlan(("python", "train.py", "a b"), tmp_path / "my dir", {"B": "2", "A": "x y"})
    assert plan.command_text() == f"cd {shlex.quote(str(tmp_path / 'my dir'))} && A='x y' B=2 python train.py 'a b'\n"


def test_run_streams_every_byte_to_the_log_and_the_callback(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_bytes(b"earlier attempt\n")
    code = "import sys; print('step 1'); print('héllo', flush=True); sys.stderr.write('warn\\n'); sys.exit(3)"
    seen: list[str] = []
    result = run(LaunchPlan((sys.executable, "-c", code), tmp_path), log, seen.append)
    assert (result.exit_code, result.interrupted, result.stopped) == (3, False, None)
    assert "".join(seen).splitlines() == ["step 1", "héllo", "warn"]
    assert log.read_text("utf-8").splitlines() == ["earlier attempt", "step 1", "héllo", "warn"]


def test_a_child_killed_by_a_signal_exits_128_plus_the_signal(tmp_path: Path) -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    result = run(LaunchPlan((sys.executable, "-c", code), tmp_path), tmp_path / "log", lambda text: None)
    assert result.exit_code == 128 + 9


def test_stop_ends_the_child_and_says_why(tmp_path: Path) -> None:
    code = "import time\nprint('ready', flush=True)\ntime.sleep(60)"

    def stop_when_ready(text: str) -> None:
        if "ready" in text:
            children[0].stop("loss is NaN")

    children: list[Child] = []
    result = run(LaunchPlan((sys.executable, "-c", code), tmp_path), tmp_path / "log", stop_when_ready, children.append)
    assert result.stopped == "loss is NaN" and not result.interrupted
    assert result.exit_code != 0


def test_an_interpreter_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SdScriptsError) as caught:
        run(LaunchPlan((str(tmp_path / "no-python"), "x.py"), tmp_path), tmp_path / "log", lambda text: None)
    assert caught.value.lines == (f"run.python: cannot start {tmp_path / 'no-python'}: No such file or directory",)


def test_the_fake_sd_scripts_child_replays_a_run_through_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sd, python = fake_sd.install(tmp_path)
    layout = RunLayout(tmp_path / "run")
    layout.root.mkdir()
    layout.train_toml.write_text(f'[a]\noutput_dir = "{layout.output_dir}"\noutput_name = "zdm"\n', "utf-8")
    monkeypatch.setenv("FAKE_SD_LOG", SIMPLE)
    monkeypatch.setenv("FAKE_SD_EXIT", "0")
    plan = plan_training(config(tmp_path, sd_scripts_dir=str(sd), python=str(python)), layout, "train_network.py")
    seen: list[str] = []
    result = run(plan, layout.log, seen.append)
    assert result.exit_code == 0
    assert "model saved." in "".join(seen)
    assert sorted(p.name for p in layout.output_dir.glob("*.safetensors")) == [
        "zdm-000001.safetensors",
        "zdm.safetensors",
    ]


def test_git_head_of_a_checkout_and_of_a_plain_folder(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "sd-scripts"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "pinned"], check=True)
    expected = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_head(repo) == expected and len(expected) == 40
    assert git_head(tmp_path / "plain") is None
