"""A real 2×2 sweep through the queue with the real sd-scripts on the CPU (random SD1.5 model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from real_sweep import RealSweep, real_sweep
from test_e2e_train import write_config
from test_queue_run import processes_under

from kohya_wrap.queue.store import QueueStore
from kohya_wrap.queue.sweep import sweep_runs
from kohya_wrap.queue.worker import trainer_pids

pytestmark = pytest.mark.sd_scripts


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, e2e_assets: object) -> RealSweep:
    return real_sweep(tmp_path_factory, e2e_assets)


def test_every_run_of_the_sweep_trains_to_the_end(sweep: RealSweep) -> None:
    assert sweep.queue_exit_code == 0, sweep.queue_stdout
    assert sweep.queue_stdout.splitlines()[-1] == "queue: 4 done", sweep.queue_stdout
    with QueueStore(sweep.runs_dir) as store:
        jobs = store.list()
    assert [(j.state, j.attempts, j.sweep) for j in jobs] == [("done", 1, sweep.name)] * 4
    assert [j.run_dir for j in jobs] == sweep_runs(sweep.runs_dir, sweep.name)


def test_each_run_has_its_values_a_suffix_and_shares_the_rest(sweep: RealSweep) -> None:
    record = json.loads((sweep.runs_dir / "sweeps" / f"{sweep.name}.json").read_text())
    expected = [("constant", 4), ("constant", 8), ("cosine", 4), ("cosine", 8)]
    assert [(r["values"]["optimizer.scheduler"], r["values"]["network.dim"]) for r in record["runs"]] == expected
    seeds, prompts = set(), set()
    for run, (scheduler, dim) in zip(record["runs"], expected, strict=True):
        folder = Path(run["run_dir"])
        config = tomllib.loads((folder / "config.toml").read_text())
        assert (config["optimizer"]["scheduler"], config["network"]["dim"]) == (scheduler, dim)
        name = f"e2e_lora-{scheduler}-d{dim}"
        assert config["save"]["output_name"] == name
        assert json.loads((folder / "run.json").read_text())["status"] == "finished"
        assert (folder / "output" / f"{name}.safetensors").is_file()
        assert (folder / "report" / "index.html").is_file()
        assert len(list((folder / "output" / "sample").glob("*.png"))) == 2  # 2 prompts, 1 epoch
        seeds.add(config["training"]["seed"])
        prompts.add(json.dumps(config["sampling"], sort_keys=True))
    assert len(seeds) == 1 and len(prompts) == 1


def test_killed_runner_real_training_resumes_in_the_same_folder(tmp_path: Path, e2e_assets: object) -> None:
    config = write_config(tmp_path, e2e_assets, e2e_assets.sd15_model, epochs=3)  # type: ignore[attr-defined]
    runs = tmp_path / "runs"
    queued = subprocess.run(
        [sys.executable, "-m", "kohya_wrap", "queue", "add", str(config)], capture_output=True, text=True, check=False
    )
    assert queued.returncode == 0, queued.stderr
    with QueueStore(runs) as store:
        (job,) = store.list()
    runner = subprocess.Popen(
        [sys.executable, "-m", "kohya_wrap", "queue", "run", "--runs-dir", str(runs), "--until-empty"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600
        while not list((job.run_dir / "output").glob("e2e_lora-000001-state/train_state.json")):
            assert time.monotonic() < deadline and runner.poll() is None, "the first epoch never saved its state"
            time.sleep(0.2)
        runner.kill()  # the runner alone; its worker and sd-scripts train on
        runner.wait()
        assert trainer_pids(job.run_dir), "sd-scripts should still be training"
        again = subprocess.run(
            [sys.executable, "-m", "kohya_wrap", "queue", "run", "--runs-dir", str(runs), "--until-empty"],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        for pid in trainer_pids(job.run_dir):
            os.kill(pid, signal.SIGKILL)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"job {job.id}: {job.run_dir.name} still trains for a runner that is gone; stopping it" in again.stdout
    with QueueStore(runs) as store:
        done = store.get(job.id)
    assert (done.state, done.attempts, done.run_dir) == ("done", 2, job.run_dir)
    assert [p.name for p in runs.iterdir() if p.is_dir()] == [job.run_dir.name]
    record = json.loads((job.run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["attempts"] == 2
    assert Path(record["resumed_from"]).parent == job.run_dir / "output"  # resumed, not trained from zero
    out = job.run_dir / "output"
    assert sorted(p.name for p in out.glob("*.safetensors")) == [
        "e2e_lora-000001.safetensors",
        "e2e_lora-000002.safetensors",
        "e2e_lora.safetensors",
    ]
    assert processes_under(tmp_path) == []
