"""`sweep` and `queue` through the command line: what they print, and refused input that writes nothing."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import fake_sd
import pytest
from click.testing import CliRunner
from filetree import snapshot

from kohya_wrap.cli import main
from kohya_wrap.commands.queue import read_progress, status
from kohya_wrap.errors import ConfigError
from kohya_wrap.queue.local import parse_gpus, plan_slots
from kohya_wrap.queue.store import Claimant, QueueStore
from kohya_wrap.train import events as ev

HERE = Path(__file__).parent
SIMPLE = os.pathsep.join(
    str(HERE / "fixtures" / "logs" / f"sd15_accelerate_console_log_simple.{s}.txt") for s in ("stdout", "stderr")
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    fake_sd.write_project(tmp_path, output_name="zdm")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKE_SD_LOG", SIMPLE)
    return tmp_path


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_dry_run_lists_runs_and_total_and_writes_nothing(project: Path) -> None:
    before = snapshot(project)
    code, out, err = invoke(
        "sweep", "lora.toml", "--grid", "optimizer.type=AdamW,Lion", "--grid", "network.dim=4,8", "--dry-run"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("sweep zdm-") and lines[0].endswith(
        ": 4 runs (2 optimizer.type × 2 network.dim); nothing written"
    )
    assert [line.split()[0] for line in lines[1:5]] == ["zdm-adamw-d4", "zdm-adamw-d8", "zdm-lion-d4", "zdm-lion-d8"]
    assert "optimizer.type=Lion, network.dim=8  steps 40  time " in lines[4]
    assert " vram ≈ " in lines[4]
    assert lines[5].startswith("total: 160 steps")
    assert snapshot(project) == before


def test_sweep_queues_every_combination_with_a_record(project: Path) -> None:
    code, out, err = invoke(
        "sweep", "lora.toml", "--grid", "network.dim=4,8", "--set", "training.epochs=1", "--name", "dims"
    )
    assert code == 0, err
    assert out.splitlines()[0] == f"sweep dims: 2 runs (2 network.dim) queued in {project / 'runs'}"
    record = json.loads((project / "runs" / "sweeps" / "dims.json").read_text())
    assert record["name"] == "dims" and record["axes"] == {"network.dim": [4, 8]}
    assert [r["values"] for r in record["runs"]] == [{"network.dim": 4}, {"network.dim": 8}]
    for run, dim in zip(record["runs"], (4, 8), strict=True):
        folder = Path(run["run_dir"])
        assert folder.name.startswith(f"zdm-d{dim}-")
        config = (folder / "config.toml").read_text()
        assert f"dim = {dim}\n" in config and 'output_name = "zdm-d' in config and "epochs = 1\n" in config
        assert json.loads((folder / "run.json").read_text())["status"] == "planned"
    code, out, _ = invoke("queue", "list")
    assert code == 0
    assert [line.split()[:2] for line in out.splitlines()] == [["1", "queued"], ["2", "queued"]]
    code, out, _ = invoke("queue", "list", "--json")
    doc = json.loads(out)
    assert doc["paused"] is False
    assert [(j["id"], j["state"], j["sweep"], j["gpus"]) for j in doc["jobs"]] == [
        (1, "queued", "dims", 1),
        (2, "queued", "dims", 1),
    ]


def test_sweep_table_in_the_config(project: Path) -> None:
    config = project / "lora.toml"
    config.write_text(config.read_text() + '\n[sweep]\ngrid = { "optimizer.scheduler" = ["cosine", "linear"] }\n')
    code, out, err = invoke("sweep", "lora.toml", "--dry-run")
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()[1:3]] == ["zdm-cosine", "zdm-linear"]


def refused(project: Path, *args: str) -> list[str]:
    before = snapshot(project)
    code, out, err = invoke(*args)
    assert code == 2, out + err
    assert out == ""
    assert snapshot(project) == before
    return err.splitlines()


def test_bad_grids_are_refused_and_nothing_written(project: Path) -> None:
    assert refused(project, "sweep", "lora.toml", "--grid", "network.dimm=4,8") == [
        "--grid network.dimm: unknown key; did you mean 'network.dim'?"
    ]
    assert refused(project, "sweep", "lora.toml", "--grid", "network.dim=4,big") == [
        "--grid network.dim=big: Input should be a valid integer (got 'big')"
    ]
    assert refused(project, "sweep", "lora.toml", "--grid", "network.dim=") == [
        "--grid network.dim: no values; give at least one, e.g. network.dim=v1,v2"
    ]
    assert refused(project, "sweep", "lora.toml", "--grid", "network.dim=4", "--grid", "network.dim=8") == [
        "--grid network.dim: given twice; put all its values in one --grid network.dim=v1,v2"
    ]
    assert refused(project, "sweep", "lora.toml", "--grid", "network.dim=4,8", "--set", "network.dim=16") == [
        "--grid network.dim: also set by --set; give its values only in --grid"
    ]
    assert refused(project, "sweep", "lora.toml", "--name", "../x", "--grid", "network.dim=4,8") == [
        "--name: '../x' is not a usable sweep name; use letters, digits, '.', '_' or '-' (up to 100), "
        "starting with a letter or digit"
    ]


def test_a_combination_failing_validation_names_combination_and_key(project: Path) -> None:
    lines = refused(
        project,
        "sweep",
        "lora.toml",
        "--grid",
        "optimizer.scheduler=constant,cosine",
        "--grid",
        "network.dim=4,8",
        "--set",
        "optimizer.warmup_percent=10",
    )
    message = (
        "optimizer.warmup_percent: the constant scheduler cannot warm up; set it to 0 or use "
        'scheduler = "constant_with_warmup"'
    )
    assert lines == [
        f"sweep: combination optimizer.scheduler=constant, network.dim=4: {message}",
        f"sweep: combination optimizer.scheduler=constant, network.dim=8: {message}",
    ]


def test_a_problem_of_every_combination_is_said_once(project: Path) -> None:
    lines = refused(project, "sweep", "lora.toml", "--grid", "network.dim=4,8", "--set", "model.base=missing-model")
    assert len(lines) == 1 and lines[0].startswith("model.base: ")


def test_existing_sweep_name_is_refused(project: Path) -> None:
    assert invoke("sweep", "lora.toml", "--grid", "network.dim=4,8", "--name", "s")[0] == 0
    assert refused(project, "sweep", "lora.toml", "--grid", "network.dim=4,8", "--name", "s") == [
        f"--name: a sweep named 's' already exists in {project / 'runs' / 'sweeps'}; choose another name"
    ]


def test_queue_add_list_cancel_retry_remove_pause(project: Path) -> None:
    code, out, err = invoke("queue", "add", "lora.toml", "--priority", "3")
    assert code == 0, err
    (line,) = out.splitlines()
    assert line.startswith(f"queued 1  {project / 'runs' / 'zdm-'}")
    assert invoke("queue", "cancel", "1")[1].startswith("cancelled 1  zdm-")
    assert invoke("queue", "list")[1].split()[:2] == ["1", "cancelled"]
    assert invoke("queue", "retry", "1")[1].startswith("queued 1  zdm-")
    assert (
        invoke("queue", "pause")[1] == "paused: running runs go on; no new run starts until `kohya-wrap queue resume`\n"
    )
    out = invoke("queue", "list")[1]
    assert out.splitlines()[-1] == "paused: runners start no new run (`kohya-wrap queue resume`)"
    assert "priority 3" in out.splitlines()[0]
    assert invoke("queue", "priority", "1", "--to", "-1")[1].startswith("priority -1  1  zdm-")
    assert "priority -1" in invoke("queue", "list")[1].splitlines()[0]
    assert invoke("queue", "resume")[1] == "resumed: runners start queued runs again\n"
    assert invoke("queue", "remove", "1")[1].startswith("removed 1  zdm-")
    assert invoke("queue", "list")[1] == "the queue of runs is empty\n"


def test_queue_ids_refused(project: Path) -> None:
    assert invoke("queue", "add", "lora.toml")[0] == 0
    db = project / "runs" / "queue.sqlite3"
    assert refused(project, "queue", "cancel", "1", "7") == [
        f"queue cancel: no job 7 in {db}; see `kohya-wrap queue list`"
    ]
    assert refused(project, "queue", "cancel", "x") == [
        "queue cancel: 'x' is not a job ID; see `kohya-wrap queue list`"
    ]
    assert refused(project, "queue", "retry", "1") == ["queue retry: job 1 is queued"]
    assert refused(project, "queue", "priority", "1", "x", "--to", "2") == [
        "queue priority: 'x' is not a job ID; see `kohya-wrap queue list`"
    ]
    assert invoke("queue", "cancel", "1")[0] == 0
    assert refused(project, "queue", "priority", "1", "--to", "2") == [
        "queue priority: job 1 is cancelled; only a queued job waits for its turn"
    ]


def test_queue_commands_without_a_queue(project: Path) -> None:
    assert refused(project, "queue", "cancel", "1") == [
        f"queue: no queue in {project / 'runs'}; add runs with `kohya-wrap queue add CONFIG` or `sweep`"
    ]


def test_foreign_or_corrupt_database_is_refused(project: Path) -> None:
    (project / "runs").mkdir()
    db = project / "runs" / "queue.sqlite3"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.close()
    assert refused(project, "queue", "list") == [
        f"queue: {db} is an SQLite database that is not a kohya_wrap queue; move it away or use another runs "
        "folder (it was left as it is)"
    ]
    assert refused(project, "sweep", "lora.toml", "--grid", "network.dim=4,8") == refused(project, "queue", "list")
    db.write_bytes(b"garbage" * 200)
    assert refused(project, "queue", "add", "lora.toml") == [
        f"queue: {db} is corrupt or not a database (file is not a database); move it away to start a new queue "
        "(the run folders keep every run's record)"
    ]


def test_gpu_options_refused(project: Path) -> None:
    assert refused(project, "queue", "run", "--gpus", "0", "--per-run", "2") == [
        "--per-run: 2 GPUs per run, but only 1 GPU to use (0)"
    ]
    assert refused(project, "queue", "run", "--gpus", "0,x") == [
        "--gpus: '0,x' must be GPU indices separated by commas, e.g. 0,1,2,3"
    ]


def test_gpu_slots() -> None:
    assert plan_slots([0, 1, 2, 3], 2, [0, 1, 2, 3]) == [(0, 1), (2, 3)]
    assert plan_slots(None, 1, [0, 1]) == [(0,), (1,)]
    assert plan_slots(None, 1, None) == [()]
    assert plan_slots([0, 1, 2], 2, None) == [(0, 1)]
    assert parse_gpus("3,1") == [3, 1]
    with pytest.raises(ConfigError) as err:
        plan_slots([0, 5], 1, [0, 1])
    assert err.value.lines == ("--gpus: no GPU 5 on this machine (found 0, 1); see `nvidia-smi`",)
    with pytest.raises(ConfigError) as err:
        plan_slots(None, 2, None)
    assert err.value.lines == ("--per-run: 2 GPUs per run, but this machine has no GPU; use --per-run 1",)
    with pytest.raises(ConfigError) as err:
        parse_gpus("1,1")
    assert err.value.lines == ("--gpus: '1,1' must be distinct GPU indices separated by commas, e.g. 0,1,2,3",)


def test_queue_add_checks_every_config_before_writing(project: Path) -> None:
    (project / "bad.toml").write_text((project / "lora.toml").read_text().replace('type = "AdamW"', 'type = "Adam"'))
    lines = refused(project, "queue", "add", "lora.toml", "bad.toml")
    assert lines == [
        "bad.toml: optimizer.type: Input should be 'AdamW', 'AdamW8bit', 'Adafactor', 'Lion', 'DAdaptation', "
        "'DAdaptAdam' or 'Prodigy' (got 'Adam')"
    ]


def test_list_shows_progress_of_running_runs(project: Path) -> None:
    assert invoke("queue", "add", "lora.toml")[0] == 0
    with QueueStore(project / "runs") as store:
        job = store.claim(Claimant.current())
        assert job is not None
        store.mark_running(job, None, [1])
    events: list[ev.Event] = [
        ev.RunStarted("train_network.py", 40, 2, 20, 20),
        ev.EpochStarted(1, 2),
        ev.Step(12, 40, 0.125, 2.0, 14.0, 6.0),
    ]
    (job.run_dir / "events.jsonl").write_text("".join(ev.to_json(e, t=1.0) + "\n" for e in events) + '{"cut')
    progress = read_progress(job.run_dir)
    assert (progress.epoch, progress.epochs, progress.step, progress.total_steps) == (1, 2, 12, 40)
    assert (progress.loss, progress.eta_s) == (0.125, 14.0)
    (entry,) = status(project / "runs").entries
    assert entry.to_json()["progress"]["step"] == 12
    code, out, _ = invoke("queue", "list")
    assert code == 0
    assert out == f"    1  running      {job.run_dir.name}  epoch 1/2, step 12/40, ETA 0:14  GPU 1\n"


def test_warnings_are_shown_per_combination(project: Path) -> None:
    code, _, err = invoke("sweep", "lora.toml", "--grid", "network.dim=4,16", "--set", "network.alpha=8", "--dry-run")
    assert code == 0
    assert [line for line in err.splitlines() if "network.alpha" in line] == [
        "warning: [network.dim=4] network.alpha: 8 is above dim 4, which scales updates up; SeaArt advises "
        "alpha ≤ dim, commonly dim / 2 = 2"
    ]
