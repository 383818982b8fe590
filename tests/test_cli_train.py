"""`train`, `runs`, `outputs` and `doctor` through the command line (fast: fake sd-scripts, no models)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import fake_sd
import pytest
from click.testing import CliRunner
from filetree import snapshot

from kohya_wrap.cli import main

HERE = Path(__file__).parent
SIMPLE = os.pathsep.join(
    str(HERE / "fixtures" / "logs" / f"sd15_accelerate_console_log_simple.{s}.txt") for s in ("stdout", "stderr")
)
VALIDATION_LOG = HERE / "fixtures" / "logs" / "sd15_validation_split.merged.txt"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    fake_sd.write_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKE_SD_LOG", SIMPLE)
    return tmp_path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_dry_run_prints_plan_and_files_and_writes_nothing(project: Path) -> None:
    code, out, err = invoke("train", "lora.toml", "--dry-run")
    assert code == 0, err
    assert "steps: 20 per epoch × 2 epochs = 40" in out
    assert "--- " in out and "train.toml" in out and "dataset.toml" in out and "accelerate.yaml" in out
    assert "accelerate.commands.launch" in out and "--dataset_config" in out
    assert not (project / "runs").exists()


def test_train_then_runs_and_outputs(project: Path) -> None:
    code, out, err = invoke("train", "lora.toml")
    assert code == 0, out + err
    (run,) = (project / "runs").iterdir()
    assert run.name.startswith("e2e_lora-")
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert "saved LoRA (epoch 1)" in out
    code, out, _ = invoke("runs")
    assert code == 0 and run.name in out and "finished" in out
    code, out, _ = invoke("outputs", str(run))
    assert code == 0
    assert out.splitlines()[0].split()[:2] == ["epoch", "1"]
    assert "output/e2e_lora.safetensors  (final)" in out


def test_train_failure_exits_1_with_hint(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    logs = HERE / "fixtures" / "logs" / "failures"
    monkeypatch.setenv(
        "FAKE_SD_LOG", os.pathsep.join(str(logs / f"constant_warmup.{s}.txt") for s in ("stdout", "stderr"))
    )
    monkeypatch.setenv("FAKE_SD_EXIT", "1")
    code, _, err = invoke("train", "lora.toml")
    assert code == 1
    lines = err.splitlines()
    assert lines[0].startswith("training failed: ")
    assert lines[1].startswith("fix: ")


def test_resume_refuses_a_config(project: Path) -> None:
    code, _, err = invoke("train", "lora.toml", "--resume", "runs/x")
    assert code == 2
    assert err.strip() == "train: --resume continues a run with its own config; drop CONFIG, --set and --preset"


def test_resume_of_a_folder_that_is_no_run(project: Path) -> None:
    code, _, err = invoke("train", "--resume", "nowhere")
    assert code == 2
    assert err.strip() == f"run: {project / 'nowhere'} is not a run folder (no run.json)"


def test_missing_sd_scripts_is_one_line(project: Path) -> None:
    code, _, err = invoke("train", "lora.toml", "--set", "run.sd_scripts_dir=elsewhere")
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        f"run.sd_scripts_dir: no train_network.py in {project / 'elsewhere'}; run `make setup` (it fetches the "
        "vendor/sd-scripts submodule) or set run.sd_scripts_dir to an sd-scripts checkout"
    )
    assert not (project / "runs").exists()


def test_runs_without_runs(project: Path) -> None:
    assert invoke("runs") == (0, "no runs in runs\n", "")


def test_resume_of_a_finished_run_is_refused(project: Path) -> None:
    assert invoke("train", "lora.toml")[0] == 0
    (run,) = (project / "runs").iterdir()
    code, _, err = invoke("train", "--resume", str(run))
    assert code == 2
    assert err.strip() == f"resume: {run} already finished all 2 epochs; start a new run to train longer"


def test_validation_loss_in_outputs_and_the_best_epoch(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_sd.captioned_images(project / "more", "zdm, 1boy", count=2)
    for image in (project / "more").iterdir():
        image.rename(project / "5_zdm" / f"x{image.name}")
    monkeypatch.setenv("FAKE_SD_LOG", str(VALIDATION_LOG))
    code, out, err = invoke("validate", "lora.toml", "--set", "validation.split=0.34")
    assert code == 0
    assert "validation: 2 images held out, their loss measured after every epoch\n" in out
    assert "warning: validation.split: 2 of 6 images are held out and only 4 are left to train on" in err
    code, out, err = invoke("train", "lora.toml", "--set", "validation.split=0.34")
    assert code == 0, out + err
    assert "validation loss (epoch 1): 1.05\n" in out and "validation loss (epoch 2): 1.05\n" in out
    (run,) = (project / "runs").iterdir()
    code, out, err = invoke("outputs", str(run))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "epoch 1         0.0 MiB  val 1.05    output/e2e_lora-000001.safetensors  (suggested)",
        "epoch 2         0.0 MiB  val 1.05    output/e2e_lora.safetensors  (final)",
        "suggested: epoch 1 (epoch 1 has the lowest validation loss (1.05) of the 2 saved epochs validated; epochs "
        "1 and 2 tie, so the earliest is suggested); the samples have the last word",
    ]
    code, out, err = invoke("outputs", str(run), "--best")
    assert code == 0
    assert out == f"{run / 'output' / 'e2e_lora-000001.safetensors'}\n"
    assert err == (
        "epoch 1 has the lowest validation loss (1.05) of the 2 saved epochs validated; epochs 1 and 2 tie, so the "
        "earliest is suggested; the samples have the last word\n"
    )
    page = (run / "report" / "index.html").read_text("utf-8")
    assert "<b>Suggested epoch: 1</b>" in page and "the samples above have the last word" in page


def test_best_of_a_run_without_validation_is_one_line(project: Path) -> None:
    assert invoke("train", "lora.toml")[0] == 0
    (run,) = (project / "runs").iterdir()
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    code, out, err = invoke("outputs", str(run), "--best")
    assert (code, out) == (2, "")
    assert err == (
        f"outputs: {run} has no validation loss, so there is no best epoch; train with validation.split above 0 "
        "(e.g. 0.1) to have one, or pick an epoch by its samples\n"
    )
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


# ---- stop ---------------------------------------------------------------------------------------------


def test_stop_from_another_terminal_is_ctrl_c(project: Path) -> None:
    proc, run = fake_sd.start_training(project)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "running" and record["trainer"].split("/")[1] == str(proc.pid)
    # A second trainer on the same folder is refused, and writes nothing.
    before = snapshot(run)
    code, _, err = invoke("train", "--resume", str(run))
    assert (code, err) == (
        2,
        f"resume: {run.name} is training now (pid {proc.pid}); stop it first with `kohya-wrap stop {run}`\n",
    )
    assert snapshot(run) == before
    code, out, err = invoke("stop", str(run))
    assert code == 0, err
    assert out == (
        f"stopping {run.name}: Ctrl-C sent to its trainer (pid {proc.pid}); what it saved stays, and "
        f"`kohya-wrap train --resume {run}` continues it\n"
    )
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert f"continue with `kohya-wrap train --resume {run}`" in stderr
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "interrupted" and record["trainer"] is None
    assert (run / "output" / "e2e_lora-000001.safetensors").is_file()
    code, _, err = invoke("stop", str(run))
    assert (code, err) == (2, f"stop: {run.name} is not training (it is interrupted); nothing to stop\n")


def fake_running(run: Path, trainer: str | None) -> None:
    record = json.loads((run / "run.json").read_text())
    record.update(status="running", trainer=trainer)
    (run / "run.json").write_text(json.dumps(record))


def test_stop_of_a_run_whose_trainer_is_gone_or_elsewhere(project: Path) -> None:
    assert invoke("train", "lora.toml")[0] == 0
    (run,) = (project / "runs").iterdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    fake_running(run, f"{socket.gethostname()}/{dead.pid}/")
    line = next(line for line in invoke("runs")[1].splitlines() if line.startswith(run.name))
    assert line.endswith(f"its trainer (pid {dead.pid}) is gone: `kohya-wrap train --resume {run}` continues it")
    code, _, err = invoke("stop", str(run))
    assert (code, err) == (
        2,
        f"stop: {run.name} is marked running but its trainer (pid {dead.pid}) is gone; continue it with "
        f"`kohya-wrap train --resume {run}`\n",
    )
    fake_running(run, "gpu-node-7/4242/x")
    code, _, err = invoke("stop", str(run))
    assert (code, err) == (2, f"stop: {run.name} trains on gpu-node-7 (pid 4242); stop it there\n")
    fake_running(run, None)
    code, _, err = invoke("stop", str(run))
    assert (code, err) == (
        2,
        f"stop: {run / 'run.json'} does not say which process trains {run.name}; stop it where it runs\n",
    )
    code, _, err = invoke("stop", str(project / "lora.toml"))
    assert (code, err) == (
        2,
        f"run: {project / 'lora.toml'} is a file, not a run folder; give the folder that holds run.json\n",
    )


def test_stop_of_a_queued_run_cancels_its_job(project: Path) -> None:
    assert invoke("queue", "add", "lora.toml")[0] == 0
    (run,) = (project / "runs").glob("e2e_lora-*")
    code, out, err = invoke("stop", str(run))
    assert code == 0, err
    assert out == f"stopping {run.name}: queue job 1 cancelled; its runner stops it cleanly\n"
    assert invoke("queue", "list")[1].split()[:2] == ["1", "cancelled"]
