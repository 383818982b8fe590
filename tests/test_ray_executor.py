"""The queue on a Ray cluster started inside the test session (fake GPU ids on the CPU): placement, a real
run, a killed task that resumes, and the install hint when ray is missing."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fake_sd
import pytest
from click.testing import CliRunner
from filetree import snapshot
from test_e2e_train import assert_trained, write_config

from kohya_wrap.cli import main
from kohya_wrap.commands.queue import add, check_configs
from kohya_wrap.queue.ray_executor import Node, check_shared_storage, run_queue
from kohya_wrap.queue.store import QueueError, QueueStore
from kohya_wrap.queue.worker import WORKER_LOG
from kohya_wrap.train import events as ev
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.train.runs import read_record

pytestmark = pytest.mark.ray

HERE = Path(__file__).parent
SIMPLE = os.pathsep.join(
    str(HERE / "fixtures" / "logs" / f"sd15_accelerate_console_log_simple.{s}.txt") for s in ("stdout", "stderr")
)
RAY_MISSING = (
    "queue run --ray: ray is not installed; install it with `pip install 'kohya-wrap[ray]'` "
    "(from a checkout: `pip install -e '.[ray]'`)"
)
FAKE_GPUS = 2
TIMEOUT_S = 180

# The replaying fake sd-scripts, wrapped: it records when it ran and on which GPU (what Ray set and what
# accelerate was told), holds the GPU a moment so runs overlap, and hangs after the first saved state once
# when HANG_ONCE names a file that does not exist yet. Environment comes from here, not from the test:
# Ray workers inherit the environment of the process that started the cluster.
WRAPPER = """\
import json, os, subprocess, sys, time
from pathlib import Path

record = Path({record!r})
hang_once = {hang_once!r}
argv = sys.argv[1:]
accelerate = Path(argv[argv.index("--config_file") + 1]).read_text()
gpu_ids = next(line.split(": ", 1)[1] for line in accelerate.splitlines() if line.startswith("gpu_ids:"))
env = {{**os.environ, "FAKE_SD_LOG": {log!r}, "FAKE_SD_HANG": "0"}}
if hang_once and not os.path.exists(hang_once):
    Path(hang_once).write_text("")
    env["FAKE_SD_HANG"] = "1"
start = time.time()
time.sleep({hold})
code = subprocess.call([sys.executable, {replay!r}, *argv], env=env)
line = {{"run": argv[-1], "start": start, "end": time.time(), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpu_ids": json.loads(gpu_ids)}}
with record.open("a") as handle:
    handle.write(json.dumps(line) + "\\n")
sys.exit(code)
"""


def ray_problem() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "ray is not installed: `pip install -e '.[ray]'` (the Ray executor tests need it)"
    return None


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """One local Ray cluster for the session: 2 CPUs and 2 fake GPUs (Ray hands out ids 0 and 1)."""
    if (problem := ray_problem()) is not None:
        pytest.skip(problem)
    import ray

    # Real training shares the 2 cores with Ray's own processes: give a starved GCS or raylet minutes, not Ray's
    # default seconds, before the driver (this pytest process) gives up on it and exits.
    patient = {"gcs_rpc_server_reconnect_timeout_s": 600, "health_check_failure_threshold": 60}
    ray.init(
        num_cpus=2,
        num_gpus=FAKE_GPUS,
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,
        _system_config=patient,
    )
    yield ray
    ray.shutdown()


def write_project(root: Path, hold_s: float = 0.0, hang_once: Path | None = None, run_extra: str = "") -> Path:
    """A config on the fake sd-scripts whose interpreter records GPU use into root/gpu-use.jsonl."""
    sd, _ = fake_sd.install(root)
    wrapper_py = root / "record_gpu.py"
    wrapper_py.write_text(
        WRAPPER.format(
            record=str(root / "gpu-use.jsonl"),
            hang_once=str(hang_once) if hang_once else "",
            log=SIMPLE,
            hold=hold_s,
            replay=str(fake_sd.REPLAY),
        )
    )
    python = root / "recording-python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{wrapper_py}" "$@"\n')
    python.chmod(0o755)
    images = fake_sd.captioned_images(root / "data" / "1_zdm", "zdm, 1boy")
    (root / "model").mkdir()
    config = root / "lora.toml"
    config.write_text(f"""
[model]
family = "sd15"
base = "{root / "model"}"
[dataset]
dirs = [{{ path = "{images}" }}]
resolution = 64
enable_bucket = false
[optimizer]
type = "AdamW"
scheduler = "constant"
[training]
epochs = 2
batch_size = 1
[save]
output_name = "zdm"
[run]
runs_dir = "{root / "runs"}"
sd_scripts_dir = "{sd}"
python = "{python}"
cpu_threads_per_process = 1
{run_extra}
""")
    return config


def queue_runs(config: Path, count: int) -> list[int]:
    return [job.id for _ in range(count) for job in add(check_configs([config]))]


def gpu_use(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / "gpu-use.jsonl").read_text().splitlines()]


def test_three_runs_never_share_a_gpu(tmp_path: Path, ray_cluster: Any) -> None:
    config = write_project(tmp_path, hold_s=3.0)
    ids = queue_runs(config, 3)
    lines: list[str] = []
    result = run_queue(tmp_path / "runs", lines.append, "auto", until_empty=True)
    assert result.exit_code == 0 and not result.stopped_by_signal
    assert sorted(job.id for job in result.done) == ids
    with QueueStore(tmp_path / "runs") as store:
        jobs = [store.get(i) for i in ids]
    assert [job.state for job in jobs] == ["done"] * 3
    assert all(job.attempts == 1 and len(job.gpu_ids) == 1 for job in jobs)
    uses = gpu_use(tmp_path)
    assert len(uses) == 3
    for use in uses:
        # The GPU Ray granted the task is the one the run's accelerate config names.
        assert use["cuda"] == use["gpu_ids"] and use["gpu_ids"] in ("0", "1")
    overlapping = [
        (a, b) for i, a in enumerate(uses) for b in uses[i + 1 :] if a["start"] < b["end"] and b["start"] < a["end"]
    ]
    assert overlapping, "two runs should train at once on the two GPUs"
    assert all(a["gpu_ids"] != b["gpu_ids"] for a, b in overlapping)
    for job in jobs:
        assert read_record(RunLayout(job.run_dir)).status == "finished"
        assert (job.run_dir / "output" / "zdm.safetensors").is_file()
        assert (job.run_dir / "report" / "index.html").is_file()
    assert lines[0] == f"ray: 1 node, {FAKE_GPUS} GPUs; runs folder {(tmp_path / 'runs').resolve()} is shared"
    assert sorted(line for line in lines if line.endswith(" done")) == sorted(
        f"job {job.id}: {job.run_dir.name} done" for job in jobs
    )
    # The storage check leaves nothing behind.
    assert not list((tmp_path / "runs").glob(".storage-check-*"))


def worker_of(run_dir: Path) -> int | None:
    """The pid of the Ray executor's worker process training `run_dir` (its stderr is the run's worker log)."""
    log = str(run_dir / WORKER_LOG)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                if b"kohya_wrap.queue.ray_executor\0" in cmdline and os.readlink(entry / "fd" / "2") == log:
                    return int(entry.name)
            except OSError:
                continue
    return None


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def test_a_killed_task_is_requeued_and_resumes_in_the_same_folder(tmp_path: Path, ray_cluster: Any) -> None:
    config = write_project(tmp_path, hang_once=tmp_path / "hung-once")
    (job_id,) = queue_runs(config, 1)
    runs = (tmp_path / "runs").resolve()
    with QueueStore(runs) as store:
        run_dir = store.get(job_id).run_dir
    killed: list[int] = []

    def kill_the_task() -> None:
        # Once the run has saved its first state (the fake now hangs like a long epoch), SIGKILL the Ray
        # worker process that runs the task, as the OOM killer or a lost node would.
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            worker = worker_of(run_dir)
            if worker is not None and list((run_dir / "output").glob("*-state/train_state.json")):
                ray_worker = parent_of(worker)
                os.kill(ray_worker, signal.SIGKILL)
                killed.append(ray_worker)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_the_task)
    killer.start()
    lines: list[str] = []
    result = run_queue(runs, lines.append, "auto", until_empty=True)
    killer.join()
    assert killed, "the task was never seen training"
    assert result.exit_code == 0 and [job.id for job in result.done] == [job_id]
    with QueueStore(runs) as store:
        job = store.get(job_id)
    assert job.state == "done" and job.attempts == 2 and job.run_dir == run_dir
    record = read_record(RunLayout(run_dir))
    assert record.status == "finished" and record.attempts == 2
    assert record.resumed_from is not None and record.resumed_from.endswith("zdm-000001-state")
    assert [p.name for p in sorted(runs.iterdir()) if p.is_dir()] == [run_dir.name]
    events = [ev.from_json(line) for line in RunLayout(run_dir).events.read_text("utf-8").splitlines()]
    finished = [e for e in events if isinstance(e, ev.RunFinished)]
    assert [e.success for e in finished] == [False, True]
    assert any(line.startswith(f"job {job_id}: its Ray task died (") for line in lines)
    assert f"job {job_id}: {run_dir.name} was interrupted; it resumes from its last saved state" in lines
    assert worker_of(run_dir) is None


def test_ctrl_c_on_the_head_leaves_the_run_resumable(tmp_path: Path, ray_cluster: Any) -> None:
    # `run.executor = "ray"` in the config sends `queue run` (without --ray) to the cluster it names.
    address = ray_cluster.get_runtime_context().gcs_address
    run_extra = f'executor = "ray"\nray_address = "{address}"'
    config = write_project(tmp_path, hang_once=tmp_path / "hung-once", run_extra=run_extra)
    (job_id,) = queue_runs(config, 1)
    runs = (tmp_path / "runs").resolve()
    with QueueStore(runs) as store:
        run_dir = store.get(job_id).run_dir
    argv = [sys.executable, "-m", "kohya_wrap", "queue", "run", "--runs-dir", str(runs), "--until-empty"]
    head = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT_S
    while not list((run_dir / "output").glob("*-state/train_state.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    head.send_signal(signal.SIGINT)
    out, err = head.communicate(timeout=TIMEOUT_S)
    assert head.returncode == 130, err
    assert "stopping: running runs stop cleanly and stay resumable; queued runs stay queued" in out
    assert out.endswith("queue: 1 interrupted\n")
    assert err == "stopped: run `kohya-wrap queue run` again to resume the interrupted runs\n"
    with QueueStore(runs) as store:
        assert store.get(job_id).state == "interrupted"
    assert read_record(RunLayout(run_dir)).status == "interrupted"
    assert worker_of(run_dir) is None
    # Run again: it resumes in the same folder and finishes.
    again = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert again.returncode == 0, again.stderr
    assert f"job {job_id}: resuming {run_dir.name} on Ray (1 GPU, 1 CPU)" in again.stdout
    record = read_record(RunLayout(run_dir))
    assert record.status == "finished" and record.attempts == 2 and record.resumed_from is not None


@pytest.mark.sd_scripts
def test_a_real_run_trains_to_the_end_through_ray(tmp_path: Path, ray_cluster: Any, e2e_assets: Any) -> None:
    config = write_config(tmp_path, e2e_assets, e2e_assets.sd15_model, epochs=1)
    (job_id,) = [job.id for job in add(check_configs([config]))]
    lines: list[str] = []
    result = run_queue(tmp_path / "runs", lines.append, "auto", until_empty=True)
    with QueueStore(tmp_path / "runs") as store:
        job = store.get(job_id)
    assert result.exit_code == 0, (job.reason, (job.run_dir / WORKER_LOG).read_text())
    assert job.state == "done" and len(job.gpu_ids) == 1
    assert_trained(job.run_dir, epochs=1, steps=4)  # LoRA files, samples, events, run.json
    layout = RunLayout(job.run_dir)
    assert (layout.report_dir / "index.html").is_file() and (layout.report_dir / "loss.png").is_file()
    assert lines[-1] == f"job {job_id}: {job.run_dir.name} done"


def test_a_multi_machine_run_is_not_placed(tmp_path: Path, ray_cluster: Any) -> None:
    config = write_project(tmp_path)
    overrides = ["run.num_machines=2", "run.num_processes=2", 'run.main_process_ip="10.0.0.1"']
    (job,) = add(check_configs([config], overrides))
    lines: list[str] = []
    result = run_queue(tmp_path / "runs", lines.append, "auto", until_empty=True)
    reason = (
        "run.num_machines = 2: a multi-machine run is started on each machine with `kohya-wrap train`; "
        "the Ray executor places runs of one machine each"
    )
    assert result.exit_code == 1 and [j.id for j in result.failed] == [job.id]
    assert lines[1:] == [f"job {job.id}: {job.run_dir.name} failed: {reason}"]
    assert read_record(RunLayout(job.run_dir)).status == "planned"
    assert not (tmp_path / "gpu-use.jsonl").exists()


def test_a_node_that_cannot_take_part_in_the_storage_check_is_named(tmp_path: Path, ray_cluster: Any) -> None:
    # A node listed as alive that is gone by the time its marker task should run there.
    ghost = Node(id="ab" * 28, host="ghost", address="10.9.9.9", gpus=1, cpus=1)
    runs = tmp_path / "runs"
    runs.mkdir()
    with pytest.raises(QueueError) as caught:
        check_shared_storage(runs, [ghost])
    assert caught.value.lines == (
        "queue run --ray: node ghost (10.9.9.9, node abababab) is gone or takes no tasks; check the cluster with "
        "`ray status`",
    )
    assert list(runs.iterdir()) == []


def test_ray_missing_is_one_line_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    runs = tmp_path / "runs"
    result = CliRunner().invoke(main, ["queue", "run", "--runs-dir", str(runs), "--ray"])
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", RAY_MISSING + "\n")
    assert list(tmp_path.iterdir()) == []


def test_ray_with_this_machines_gpu_options_is_refused(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = CliRunner().invoke(main, ["queue", "run", "--runs-dir", str(runs), "--ray", "--gpus", "0"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "queue run --ray: --gpus and --per-run choose this machine's GPUs; on Ray each run reserves its own "
        "(its run.num_processes) on some node, so drop them\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_runs_asking_for_different_executors_are_refused(tmp_path: Path) -> None:
    config = write_project(tmp_path)
    add(check_configs([config]))
    add(check_configs([config], ['run.executor="ray"']))
    add(check_configs([config], ['run.executor="ray"', 'run.ray_address="10.0.0.1:6379"']))
    runs = tmp_path / "runs"
    before = snapshot(runs)
    result = CliRunner().invoke(main, ["queue", "run", "--runs-dir", str(runs), "--until-empty"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "queue run: the queued runs ask for different executors (run.executor): job 1 for this machine; "
        "job 2 for Ray at auto; job 3 for Ray at 10.0.0.1:6379; choose one for all with `--ray ADDRESS`, or "
        "queue them in different runs folders\n"
    )
    assert snapshot(runs) == before
