"""`queue run` as real processes with the fake sd-scripts: shared queues, a killed runner, Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import fake_sd
import pytest

from kohya_wrap.procs import group_alive
from kohya_wrap.queue.store import Job, QueueStore
from kohya_wrap.queue.worker import trainer_pids

HERE = Path(__file__).parent
SIMPLE = os.pathsep.join(
    str(HERE / "fixtures" / "logs" / f"sd15_accelerate_console_log_simple.{s}.txt") for s in ("stdout", "stderr")
)
TIMEOUT_S = 120


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    fake_sd.write_project(tmp_path, output_name="zdm")
    yield tmp_path
    # A failed test must not leave its runners, workers or fake trainers behind.
    for pid in pids_under(tmp_path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def kohya_wrap(project: Path, *args: str, hang: bool = False) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "FAKE_SD_LOG": SIMPLE,
        "FAKE_SD_ARGV": str(project / "argv.jsonl"),
        "FAKE_SD_HANG": "1" if hang else "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "kohya_wrap", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=TIMEOUT_S)
    return proc.returncode, out


def sweep(project: Path, dims: str) -> None:
    code, out = finish(kohya_wrap(project, "sweep", "lora.toml", "--grid", f"network.dim={dims}", "--name", "s"))
    assert code == 0, out


def jobs(project: Path) -> list[Job]:
    with QueueStore(project / "runs") as store:
        return store.list()


def launches(project: Path) -> list[list[str]]:
    """Every training the fake sd-scripts started (other calls of the interpreter, e.g. probes, left out)."""
    path = project / "argv.jsonl"
    found = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [argv for argv in found if "--dataset_config" in argv]


def launches_of(project: Path, run_dir: Path) -> list[list[str]]:
    return [argv for argv in launches(project) if str(run_dir / "train.toml") in argv]


def wait_for(what: Callable[[], bool], timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def processes_under(root: Path) -> list[str]:
    """Command lines of live processes that mention `root` (none may be left behind)."""
    return [cmdline for _, cmdline in _processes_under(root)]


def pids_under(root: Path) -> list[int]:
    return [pid for pid, _ in _processes_under(root)]


def _processes_under(root: Path) -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(root) in cmdline and state != "Z":
            found.append((int(entry.name), cmdline))
    return found


def record(run_dir: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((run_dir / "run.json").read_text())
    return data


def test_two_runners_share_one_queue_and_never_start_a_run_twice(project: Path) -> None:
    sweep(project, "4,8,12,16")
    runners = [kohya_wrap(project, "queue", "run", "--until-empty") for _ in range(2)]
    results = [finish(r) for r in runners]
    assert all(code == 0 for code, _ in results), results
    done = jobs(project)
    assert [(j.state, j.attempts) for j in done] == [("done", 1)] * 4
    for job in done:
        assert len(launches_of(project, job.run_dir)) == 1
        assert record(job.run_dir)["status"] == "finished"
        assert (job.run_dir / "report" / "index.html").is_file()
    assert len(launches(project)) == 4
    assert processes_under(project) == []


def test_killed_runner_its_run_resumes_in_the_same_folder_and_every_run_finishes_once(project: Path) -> None:
    sweep(project, "4,8")
    first = kohya_wrap(project, "queue", "run", "--until-empty", hang=True)
    with QueueStore(project / "runs") as store:
        job = store.list()[0]
        state = job.run_dir / "output" / "zdm-d4-000001-state" / "train_state.json"
        wait_for(state.is_file)  # the first run saved epoch 1 and now trains on (the fake waits here)
        running = store.get(job.id)
    assert running.state == "running" and running.pgid is not None
    first.kill()  # SIGKILL: the runner alone; its worker and the trainer go on
    first.communicate()
    os.killpg(running.pgid, 0)  # the worker still runs

    code, out = finish(kohya_wrap(project, "queue", "run", "--until-empty"))
    assert code == 0, out
    assert f"job {job.id}: {job.run_dir.name} still trains for a runner that is gone; stopping it" in out
    assert f"job {job.id}: resuming {job.run_dir.name}" in out
    final = jobs(project)
    assert [(j.state, j.attempts) for j in final] == [("done", 2), ("done", 1)]
    resumed = final[0]
    assert resumed.run_dir == job.run_dir
    first_launch, second_launch = launches_of(project, job.run_dir)
    assert "--resume" not in first_launch
    assert second_launch[second_launch.index("--resume") + 1] == str(state.parent)
    assert record(job.run_dir)["status"] == "finished"
    assert record(job.run_dir)["resumed_from"] == str(state.parent)
    assert len(launches_of(project, final[1].run_dir)) == 1
    assert sorted(p.name for p in (project / "runs").iterdir() if p.is_dir()) == sorted(
        [final[0].run_dir.name, final[1].run_dir.name, "sweeps"]
    )
    assert processes_under(project) == []


def test_ctrl_c_interrupts_running_runs_and_keeps_queued_ones(project: Path) -> None:
    sweep(project, "4,8")
    runner = kohya_wrap(project, "queue", "run", "--until-empty", hang=True)
    first = jobs(project)[0]
    wait_for((first.run_dir / "output" / "zdm-d4-000001-state" / "train_state.json").is_file)
    runner.send_signal(signal.SIGINT)
    code, out = finish(runner)
    assert code == 130, out
    assert "stopping: running runs stop cleanly and stay resumable; queued runs stay queued" in out
    after = jobs(project)
    assert [j.state for j in after] == ["interrupted", "queued"]
    assert record(first.run_dir)["status"] == "interrupted"
    assert (first.run_dir / "report" / "index.html").is_file()
    assert processes_under(project) == []

    code, out = finish(kohya_wrap(project, "queue", "run", "--until-empty"))
    assert code == 0, out
    assert [(j.state, j.attempts) for j in jobs(project)] == [("done", 2), ("done", 1)]
    assert "--resume" in launches_of(project, first.run_dir)[1]


def test_a_failed_run_does_not_stop_the_queue(project: Path) -> None:
    sweep(project, "4,8")
    broken = jobs(project)[0].run_dir / "train.toml"
    broken.unlink()  # sd-scripts (here: the fake) cannot start this run
    code, out = finish(kohya_wrap(project, "queue", "run", "--until-empty"))
    assert code == 1, out
    assert [j.state for j in jobs(project)] == ["failed", "done"]
    assert out.splitlines()[-1] == "queue: 1 done, 1 failed"
    assert processes_under(project) == []


def test_a_killed_worker_its_trainer_is_stopped_and_the_run_resumes(project: Path) -> None:
    sweep(project, "4")
    runner = kohya_wrap(project, "queue", "run", "--until-empty", hang=True)
    (job,) = jobs(project)
    state = job.run_dir / "output" / "zdm-000001-state" / "train_state.json"  # one value: no name suffix
    wait_for(state.is_file)
    (first_trainer,) = {os.getpgid(pid) for pid in trainer_pids(job.run_dir)}
    worker = jobs(project)[0].pgid
    assert worker is not None and worker != first_trainer
    os.killpg(worker, signal.SIGKILL)  # the worker alone: its trainer (own session) goes on for now
    wait_for(lambda: len(launches_of(project, job.run_dir)) == 2)  # resumed by the same runner
    assert not group_alive(first_trainer)  # stopped before the second trainer started
    again = jobs(project)[0]
    assert (again.attempts, again.crashes, again.state) == (2, 1, "running")
    assert "--resume" in launches_of(project, job.run_dir)[1]
    wait_for(lambda: bool(trainer_pids(job.run_dir)))
    runner.send_signal(signal.SIGINT)  # the resumed attempt waits in the fake too; stop it cleanly
    code, out = finish(runner)
    assert code == 130, out
    assert f"job {job.id}: {job.run_dir.name} queued: interrupted: its worker killed by signal 9" in out
    code, out = finish(kohya_wrap(project, "queue", "run", "--until-empty"))
    assert code == 0, out
    assert [(j.state, j.attempts) for j in jobs(project)] == [("done", 3)]
    assert record(job.run_dir)["status"] == "finished"
    assert processes_under(project) == []
