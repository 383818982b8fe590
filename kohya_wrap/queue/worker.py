"""One claimed queue job trained to its end, in a process of its own: `python -m kohya_wrap.queue.worker`.

The worker calls the same `commands.train.run` / `commands.train.resume` as `kohya-wrap train` and records
the outcome in the queue. It runs in its own session (so it outlives a killed runner and a Ctrl-C meant
for the runner reaches it only when the runner forwards it) and in its main thread (training installs
SIGINT/SIGTERM handlers, which only a main thread may).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Literal, Protocol

from kohya_wrap.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_TRAINING_FAILED,
    KohyaWrapError,
    RunError,
    TrainingFailed,
    TrainingInterrupted,
)
from kohya_wrap.files import write_atomic
from kohya_wrap.procs import group_alive, stat_fields
from kohya_wrap.queue.store import Job, QueueStore, State
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.train.view import SilentView, View

WORKER_LOG = "queue-worker.log"
# How long a stopped worker gets before its process groups are killed: training escalates
# SIGINT → SIGTERM → SIGKILL on sd-scripts itself over two grace periods (launch.GRACE_SECONDS).
STOP_GRACE_S = 45.0
EXIT_BY_STATE = {"done": 0, "failed": EXIT_TRAINING_FAILED, "interrupted": EXIT_INTERRUPTED}


@dataclass(frozen=True)
class Outcome:
    """What became of a job: the state recorded in the queue and why."""

    state: State
    reason: str | None
    recorded: bool  # False when the claim was no longer this one (cancelled meanwhile): nothing written


class ClaimRecord(Protocol):
    """Where a worker records its claim: the queue database, or (on a Ray node) the runner that holds the claim."""

    def mark_running(self, job: Job, pgid: int | None, gpu_ids: Sequence[int] = ()) -> Job | None: ...
    def finish(self, job: Job, state: State, reason: str | None = None) -> bool: ...
    def get(self, job_id: int) -> Job: ...


def point_at_gpus(run_dir: Path, gpu_ids: Sequence[int]) -> None:
    """Make a run folder's accelerate config train on `gpu_ids` (at least its num_processes of them).

    Only accelerate.yaml changes (gpu_ids); config.toml keeps what the user asked for. No GPU ids: the
    file is left as it is (CPU machines, or GPUs chosen by the run's own config).
    """
    if not gpu_ids:
        return
    path = RunLayout(run_dir).accelerate
    doc = read_accelerate(path)
    processes = doc.get("num_processes", 1)
    if not isinstance(processes, int) or len(gpu_ids) < processes:
        raise RunError(f"queue: {run_dir} trains on {processes} processes but was given GPUs {list(gpu_ids)}")
    doc["gpu_ids"] = ",".join(str(g) for g in gpu_ids)
    from kohya_wrap.train.render import accelerate_yaml

    write_atomic(path, accelerate_yaml(doc))


def read_accelerate(path: Path) -> dict[str, object]:
    """The accelerate.yaml we rendered (one `key: <JSON scalar>` per line)."""
    try:
        lines = path.read_text("utf-8").splitlines()
    except OSError as exc:
        raise RunError(f"queue: cannot read {path}: {exc.strerror}") from None
    doc: dict[str, object] = {}
    for line in lines:
        key, sep, value = line.partition(": ")
        if not sep:
            continue
        try:
            doc[key] = json.loads(value)
        except ValueError:
            raise RunError(f"queue: {path} was changed by hand ({line!r}); render the run again") from None
    return doc


def gpus_needed(run_dir: Path) -> int:
    """GPUs a planned run trains on: its accelerate config's num_processes on this machine."""
    doc = read_accelerate(RunLayout(run_dir).accelerate)
    processes, machines = doc.get("num_processes", 1), doc.get("num_machines", 1)
    if not isinstance(processes, int) or not isinstance(machines, int):
        raise RunError(f"queue: {run_dir}/accelerate.yaml has no usable num_processes")
    return max(1, processes // max(machines, 1))


def run_job(
    store: ClaimRecord, job: Job, gpu_ids: Sequence[int], view: View, pgid: int | None | Literal["own"] = "own"
) -> Outcome:
    """Train one claimed job to its end (or resume it) and record the outcome; call from a main thread.

    A planned run goes through `commands.train.run`; one with `job.resume` set continues from its last
    saved state through `commands.train.resume` (from the start, in the same folder, when it saved none).
    `pgid` is the process group recorded as training the job, which a runner on the claimant's host may
    signal to stop it: by default this process's group when the job was claimed on this host, else none.
    """
    from kohya_wrap.commands import train as commands
    from kohya_wrap.train.runs import read_record

    try:
        layout = commands.open_run(job.run_dir)
        record = read_record(layout)
        point_at_gpus(layout.root, gpu_ids)
    except KohyaWrapError as exc:
        view.close()
        return _finish(store, job, "failed", exc.lines[0])
    if pgid == "own":
        pgid = os.getpgid(0) if job.claimant is None or job.claimant.host == socket.gethostname() else None
    if store.mark_running(job, pgid, gpu_ids) is None:
        view.close()
        return Outcome(store.get(job.id).state, "the claim was taken back before training started", False)
    try:
        # A trainer left by a killed worker may still write this folder: never two trainers on one run.
        if stopped := stop_trainers(layout.root):
            view.note(f"stopped {stopped} trainer(s) left running in {layout.root} by an earlier attempt")
            record = read_record(layout)
        if record.status == "finished":
            # Trained to the end before its runner died, just before the outcome was recorded.
            view.close()
            return _finish(store, job, "done", record.reason or "completed")
        if job.resume and _has_saved_state(layout, record.name):
            done = commands.resume(layout.root, view, check_trainer=False)  # the claim makes the run ours
        else:
            done = commands.run(layout, view)
    except TrainingInterrupted:
        return _finish(store, job, "interrupted", "stopped; resumes from its last saved state when the queue runs")
    except KeyboardInterrupt:
        view.close()
        return _finish(store, job, "interrupted", "stopped before training began")
    except TrainingFailed as exc:
        return _finish(store, job, "failed", exc.lines[0].removeprefix("training failed: "))
    except KohyaWrapError as exc:
        return _finish(store, job, "failed", exc.lines[0])
    return _finish(store, job, "done", done.reason or "completed")


def _has_saved_state(layout: RunLayout, name: str) -> bool:
    from kohya_wrap.train.runner import find_resume_point

    try:
        find_resume_point(layout, name)
    except RunError:
        return False
    return True


def _finish(store: ClaimRecord, job: Job, state: State, reason: str | None) -> Outcome:
    if store.finish(job, state, reason):
        return Outcome(state, reason, True)
    return Outcome(store.get(job.id).state, reason, False)


def start_worker(runs_dir: Path, job: Job, gpu_ids: Sequence[int]) -> subprocess.Popen[bytes]:
    """Start `python -m kohya_wrap.queue.worker` for a claimed job in a new session (its own process group).

    Its output goes to `<run_dir>/queue-worker.log`, not to us: it must outlive a runner that is killed.
    """
    argv = [sys.executable, "-m", "kohya_wrap.queue.worker", str(runs_dir), str(job.id)]
    if gpu_ids:
        argv += ["--gpus", ",".join(str(g) for g in gpu_ids)]
    with open(job.run_dir / WORKER_LOG, "ab") as log:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def child_groups(pgid: int) -> set[int]:
    """Process groups started by members of `pgid` (sd-scripts runs in its own), read from /proc."""
    members: set[int] = set()
    parents: dict[int, tuple[int, int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        fields = stat_fields(int(entry.name))
        if fields is None:
            continue
        pid, ppid, group = int(entry.name), int(fields[1]), int(fields[2])
        parents[pid] = (ppid, group)
        if group == pgid:
            members.add(pid)
    found: set[int] = set()
    frontier = set(members)
    while frontier:
        children = {pid for pid, (ppid, _) in parents.items() if ppid in frontier and pid not in members}
        members |= children
        found |= {parents[pid][1] for pid in children}
        frontier = children
    return found - {pgid}


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(pgid: int, grace_s: float = STOP_GRACE_S) -> None:
    """Stop a worker's process group and wait for it: SIGINT (the run is recorded interrupted and stays
    resumable), then SIGTERM, then SIGKILL for it and the process groups it started."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal_group(pgid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if not group_alive(pgid):
                return
            time.sleep(0.2)
    kill_tree(pgid)


def trainer_pids(run_dir: Path) -> list[int]:
    """Live processes on this machine training `run_dir` (their command line names its train.toml).

    Found by command line, not by process group: sd-scripts runs in a session of its own, so a trainer
    whose worker was killed is reparented and would otherwise be invisible. Only `--config_file <that
    train.toml>` as whole arguments counts, so an editor showing the file is never taken for a trainer.
    """
    needle = b"\0--config_file\0" + str(RunLayout(run_dir).train_toml).encode() + b"\0"
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "cmdline").read_bytes():
                continue
        except OSError:
            continue
        fields = stat_fields(int(entry.name))
        if fields is not None and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def stop_trainers(run_dir: Path, grace_s: float = STOP_GRACE_S) -> int:
    """Stop every process still training `run_dir` (their process groups, SIGINT first); how many groups."""
    groups = set()
    for pid in trainer_pids(run_dir):
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    groups.discard(os.getpgid(0))
    for group in groups:
        stop_group(group, grace_s)
    return len(groups)


def kill_tree(pgid: int) -> None:
    """SIGKILL a process group and every process group its members started (so no trainer is left)."""
    for group in child_groups(pgid) | {pgid}:
        signal_group(group, signal.SIGKILL)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of a worker process (started by a runner; not a user command)."""
    parser = argparse.ArgumentParser(prog="python -m kohya_wrap.queue.worker", description=__doc__)
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("job_id", type=int)
    parser.add_argument("--gpus", default="", help="GPU ids for this run, e.g. 0,1")
    args = parser.parse_args(argv)

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGTERM stops us the way Ctrl-C does: the run is recorded interrupted, never left "running".
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        gpu_ids = [int(g) for g in args.gpus.split(",") if g.strip()]
        with QueueStore(args.runs_dir) as store:
            job = store.get(args.job_id)
            if job.state != "claimed":
                print(f"queue worker: job {job.id} is {job.state}, not claimed; nothing to do", file=sys.stderr)
                return EXIT_BAD_INPUT
            try:
                outcome = run_job(store, job, gpu_ids, SilentView())
            except KeyboardInterrupt:
                # Stopped in the moment before training began: resumable like any other stop.
                outcome = _finish(store, job, "interrupted", "stopped before training began")
    except KohyaWrapError as exc:
        print("\n".join(exc.lines), file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:
        print(f"queue worker: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"queue worker: job {job.id} {outcome.state}: {outcome.reason or ''}".rstrip(), file=sys.stderr)
    return EXIT_BY_STATE.get(outcome.state, EXIT_BAD_INPUT)


if __name__ == "__main__":
    sys.exit(main())
