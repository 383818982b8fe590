"""The Ray executor: queued runs placed on the GPUs of a Ray cluster, one Ray task per run.

The queue database in the runs folder stays the record of what must run, and only this process (the
head) opens it: it claims each run, and a Ray task that reserves the run's GPUs and CPUs on some node
trains it there with the queue's `run_job` (the same `commands.train.run` / `resume` as every other
front-end), then hands the outcome back to be recorded. Ray only places and runs; a task that dies
leaves the run interrupted in the queue, to resume from its last saved state.
This is the only module that imports ray, and only inside functions (it is an optional extra).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

from kohya_wrap.errors import EXIT_INTERRUPTED, KohyaWrapError
from kohya_wrap.queue.local import RunnerResult
from kohya_wrap.queue.store import ACTIVE_STATES, Claimant, Job, QueueError, QueueStore, State
from kohya_wrap.queue.worker import STOP_GRACE_S, WORKER_LOG, kill_tree, read_accelerate, run_job, stop_group
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.train.runs import RunRecord, read_record
from kohya_wrap.train.view import SilentView

Notify = Callable[[str], None]
RAY_MISSING = (
    "queue run --ray: ray is not installed; install it with `pip install 'kohya-wrap[ray]'` "
    "(from a checkout: `pip install -e '.[ray]'`)"
)
POLL_S = 0.5
RECOVER_EVERY_S = 10.0
STORAGE_CHECK_TIMEOUT_S = 120.0
# A task that was cancelled or died gets this long for its worker to record the run interrupted
# (the worker itself escalates SIGINT → SIGTERM → SIGKILL on sd-scripts over two grace periods).
REPORT_GRACE_S = 2 * STOP_GRACE_S + 15.0
PR_SET_PDEATHSIG = 1


def import_ray() -> Any:
    """The ray module, or a one-line error saying how to install it (exit 2)."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise QueueError(RAY_MISSING) from None


# --- connecting ----------------------------------------------------------------------------------------


def connect(address: str) -> bool:
    """Join the cluster at `address` (`auto`: the one this machine belongs to; `local`: start one here).

    True when this call connected (the caller disconnects at the end); False when this process already was.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": False}
    try:
        if address == "local":
            ray.init(include_dashboard=False, **options)
        else:
            ray.init(address=address, **options)
    except ConnectionError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise QueueError(
            f"queue run --ray {address}: no Ray cluster to join ({first}); start one with `ray start --head` "
            "on this machine, or try Ray here with `--ray local`"
        ) from None
    return True


def disconnect() -> None:
    import_ray().shutdown()


@dataclass(frozen=True)
class Node:
    """An alive node of the cluster and what it offers."""

    id: str
    host: str
    address: str
    gpus: int
    cpus: int

    @property
    def label(self) -> str:
        return f"{self.host} ({self.address}, node {self.id[:8]})"


def alive_nodes() -> list[Node]:
    """The cluster's alive nodes, as Ray reports them now."""
    nodes = []
    for info in import_ray().nodes():
        if not info.get("Alive"):
            continue
        resources = info.get("Resources", {})
        nodes.append(
            Node(
                id=info["NodeID"],
                host=str(info.get("NodeManagerHostname", "?")),
                address=str(info.get("NodeManagerAddress", "?")),
                gpus=int(resources.get("GPU", 0)),
                cpus=int(resources.get("CPU", 0)),
            )
        )
    return nodes


# --- the shared storage check --------------------------------------------------------------------------


def write_marker(folder: str, name: str) -> str | None:
    """Runs on a node: write `folder/name` holding the node's id; the error text when it cannot."""
    node_id = import_ray().get_runtime_context().get_node_id()
    try:
        (Path(folder) / name).write_text(node_id, encoding="utf-8")
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def check_shared_storage(runs_dir: Path, nodes: Sequence[Node], timeout_s: float = STORAGE_CHECK_TIMEOUT_S) -> None:
    """Every node writes a marker into the runs folder and this machine reads it back; else one error per node.

    Run folders, events and reports are written on the nodes and read here (`queue list`, `compare`),
    so the runs folder must be one storage (NFS and the like) mounted at the same path everywhere.
    """
    ray = import_ray()
    strategies = importlib.import_module("ray.util.scheduling_strategies")
    token = uuid.uuid4().hex[:12]
    folder = runs_dir / f".storage-check-{token}"
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise QueueError(f"queue run --ray: cannot write to the runs folder {runs_dir}: {exc.strerror}") from None
    try:
        task = ray.remote(write_marker)
        refs = {
            node: task.options(
                num_cpus=0,
                max_retries=0,
                scheduling_strategy=strategies.NodeAffinitySchedulingStrategy(node.id, soft=False),
            ).remote(str(folder), node.id)
            for node in nodes
        }
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        problems = []
        fix = "mount the same shared storage (NFS and the like) at this path on every node"
        for node, ref in refs.items():
            where = f"queue run --ray: node {node.label}"
            if ref not in ready:
                ray.cancel(ref, force=True)
                problems.append(f"{where} did not answer within {timeout_s:.0f} s; check it with `ray status`")
                continue
            try:
                error = ray.get(ref)
            except ray.exceptions.TaskUnschedulableError:
                problems.append(f"{where} is gone or takes no tasks; check the cluster with `ray status`")
                continue
            except ray.exceptions.RayError as exc:
                problems.append(f"{where} could not run a task: {str(exc).splitlines()[0]}")
                continue
            if error is not None:
                problems.append(f"{where} cannot write to the runs folder {runs_dir} ({error}); {fix}")
            elif _read(folder / node.id) != node.id:
                problems.append(
                    f"{where} writes to {runs_dir}, but this machine does not see what it wrote there; {fix}"
                )
        if problems:
            raise QueueError(*problems)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _read(path: Path) -> str | None:
    try:
        return path.read_text("utf-8")
    except OSError:
        return None


# --- one run on a node ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskReport:
    """What a task tells the head: where the run trained, on which GPUs, and what became of it."""

    host: str
    gpu_ids: tuple[int, ...]
    state: State | None  # the outcome the worker reported; None when it reported none
    reason: str | None
    exit_code: int | None  # the worker's; None when it never started
    stopped: bool  # the head cancelled the task (Ctrl-C there, or `queue cancel`)


class RelayedClaim:
    """The claim as a worker on a node sees it: held by the head, which records the outcome in the queue.

    The queue database is opened by the head alone: SQLite cannot be shared safely over NFS and the like,
    and the run folder already says what happened.
    """

    def __init__(self, job: Job) -> None:
        self.job = job

    def mark_running(self, job: Job, pgid: int | None, gpu_ids: Sequence[int] = ()) -> Job | None:
        self.job = replace(job, state="running", pgid=pgid, gpu_ids=tuple(gpu_ids))
        return self.job

    def finish(self, job: Job, state: State, reason: str | None = None) -> bool:
        self.job = replace(job, state=state, reason=reason)
        return True

    def get(self, job_id: int) -> Job:
        return self.job


def train_on_node(job: Job) -> TaskReport:
    """Runs as a Ray task: the queue's `run_job` trains the claimed job on the GPUs Ray granted this task.

    It runs in a worker process of its own (see `start_tied_worker`) that points the run's accelerate config
    at those GPUs and calls the same `commands.train.run` / `resume` as every front-end. `ray.cancel` (a
    KeyboardInterrupt here) stops it cleanly: the run is recorded interrupted and stays resumable.
    """
    ray = import_ray()
    gpu_ids = tuple(int(g) for g in ray.get_gpu_ids())
    host = socket.gethostname()
    proc: subprocess.Popen[bytes] | None = None
    stopped = False
    try:
        try:
            proc = start_tied_worker(job, gpu_ids)
        except OSError as exc:
            return TaskReport(host, gpu_ids, "failed", f"cannot start its worker: {exc.strerror or exc}", None, False)
        while proc.poll() is None:
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        stopped = True
        if proc is None:
            return TaskReport(host, gpu_ids, "interrupted", "stopped before training began", None, True)
        _stop(proc.pid)
    finally:
        if proc is not None:
            # The worker has exited: nothing it started in a group of its own may outlive it.
            kill_tree(proc.pid)
    assert proc is not None and proc.stdout is not None
    state, reason = _outcome(proc.stdout.read())
    return TaskReport(host, gpu_ids, state, reason, proc.wait(), stopped)


def _outcome(text: bytes) -> tuple[State | None, str | None]:
    for line in reversed(text.decode("utf-8", errors="replace").splitlines()):
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict) and doc.get("state") in ("done", "failed", "interrupted"):
                return doc["state"], doc.get("reason")
    return None, None


def _stop(pgid: int) -> None:
    """Stop the worker cleanly; a second cancel from the head must not leave it running unwatched."""
    while True:
        try:
            stop_group(pgid)
            return
        except KeyboardInterrupt:
            continue


def start_tied_worker(job: Job, gpu_ids: Sequence[int]) -> subprocess.Popen[bytes]:
    """The worker for one job: a session of its own, stopped cleanly when this task's process dies.

    Its entry (`python -m kohya_wrap.queue.ray_executor`, see `work`) asks Linux for SIGTERM when its parent
    (the Ray worker) dies, so a killed task never leaves a trainer behind. The job comes in on stdin, the
    outcome goes out on stdout, everything else into the run folder's queue-worker.log.
    """
    argv = [sys.executable, "-m", "kohya_wrap.queue.ray_executor", str(os.getpid())]
    with open(job.run_dir / WORKER_LOG, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    assert proc.stdin is not None
    with proc.stdin:
        proc.stdin.write(pickle.dumps((job, tuple(gpu_ids))))
    return proc


def work(parent: int) -> int:
    """Entry of `start_tied_worker`'s process: train the job read from stdin, print its outcome as JSON."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:
        return EXIT_INTERRUPTED  # the task died before the tie was made: train nothing
    # Ray workers block SIGINT in their main thread and children inherit the mask; training stops on SIGINT.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    job, gpu_ids = pickle.loads(sys.stdin.buffer.read())

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGTERM (the task died) stops us the way Ctrl-C does: the run is recorded interrupted, never left running.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        outcome = run_job(RelayedClaim(job), job, gpu_ids, SilentView(), pgid=None)
        state, reason = outcome.state, outcome.reason
    except KeyboardInterrupt:
        state, reason = "interrupted", "stopped before training began"
    print(f"ray worker: job {job.id} {state}: {reason or ''}".rstrip(), file=sys.stderr)
    with contextlib.suppress(BrokenPipeError):
        print(json.dumps({"state": state, "reason": reason}), flush=True)
    return 0


# --- the head ------------------------------------------------------------------------------------------


@dataclass
class Placed:
    """A claimed job and the Ray task that trains it."""

    job: Job
    ref: Any
    gpus: int
    cpus: int
    cancelled_at: float | None = None
    died: str | None = None  # the task died (node lost, worker killed): why
    died_at: float = 0.0
    node_lost: bool = False  # its node is gone, and its worker with it


def reservation(job: Job, cluster_has_gpus: bool, largest_cpus: int) -> tuple[int, int]:
    """(GPUs, CPUs) a job's task reserves: its processes' GPUs and their CPU threads (capped at the widest node)."""
    threads = 2
    try:
        doc = tomllib.loads(RunLayout(job.run_dir).config.read_text("utf-8"))
        threads = int(doc.get("run", {}).get("cpu_threads_per_process", threads))
    except (OSError, ValueError, tomllib.TOMLDecodeError):
        pass  # the worker reports an unreadable run folder itself
    gpus = job.gpus if cluster_has_gpus else 0
    return gpus, max(1, min(threads * max(job.gpus, 1), largest_cpus))


def multi_machine_problem(job: Job) -> str | None:
    """Why a job cannot be one Ray task: a multi-machine run is launched on each machine by the user."""
    try:
        machines = read_accelerate(RunLayout(job.run_dir).accelerate).get("num_machines", 1)
    except KohyaWrapError:
        return None  # the worker reports an unreadable run folder with its own message
    if isinstance(machines, int) and machines > 1:
        return (
            f"run.num_machines = {machines}: a multi-machine run is started on each machine with "
            "`kohya-wrap train`; the Ray executor places runs of one machine each"
        )
    return None


class RayRunner:
    """Runs the queue of one runs folder on a Ray cluster until stopped (or empty)."""

    def __init__(self, store: QueueStore, notify: Notify) -> None:
        self.store = store
        self.notify = notify
        self.claimant = Claimant.current()
        self.result = RunnerResult()
        self.placed: list[Placed] = []
        self._ray = import_ray()
        self._task = self._ray.remote(train_on_node)
        self._signals = 0
        self._signals_seen = 0
        self._stop_deadline = 0.0
        self._last_recover = 0.0
        self._crashes: dict[int, int] = {}  # job id → tasks of it that died in this runner

    # --- the loop ------------------------------------------------------------------------------------

    def run(self, until_empty: bool) -> RunnerResult:
        """Claim and place jobs until Ctrl-C (or, with `until_empty`, until nothing is left to start)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._recover()
            self._note_too_wide()
            while True:
                self._collect()
                if self._signals:
                    self._stop_all()
                    if not self.placed:
                        break
                    self._force_after_deadline()
                    continue
                if time.monotonic() - self._last_recover >= RECOVER_EVERY_S:
                    self._recover()
                self._stop_cancelled()
                self._start_jobs()
                if until_empty and not self.placed and self._nothing_to_start():
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.placed:
                # Only reached on an unexpected error: leave no task training unsupervised.
                for placed in self.placed:
                    self._ray.cancel(placed.ref, force=True)
                    self.store.finish(placed.job, "interrupted", "its Ray runner stopped on an error")
        self.result.stopped_by_signal = self._signals > 0
        return self.result

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only counted here: Ray calls are made from the loop, never from inside a signal handler.
        self._signals += 1

    def _stop_all(self) -> None:
        """Cancel every task once (their workers stop cleanly); later signals only say we are at it."""
        if self._signals == self._signals_seen:
            return
        if not self._signals_seen:
            self.notify("stopping: running runs stop cleanly and stay resumable; queued runs stay queued")
            self._stop_deadline = time.monotonic() + REPORT_GRACE_S
            for placed in self.placed:
                self._cancel(placed)
        else:
            self.notify("still stopping: the runs are saving their state")
        self._signals_seen = self._signals

    def _cancel(self, placed: Placed) -> None:
        if placed.cancelled_at is None and placed.died is None:
            placed.cancelled_at = time.monotonic()
            self._ray.cancel(placed.ref)

    def _force_after_deadline(self) -> None:
        """A task that ignores the stop past the grace period is killed; its run stays resumable."""
        if time.monotonic() < self._stop_deadline:
            return
        for placed in list(self.placed):
            if placed.died is None:
                self._ray.cancel(placed.ref, force=True)
            self.store.finish(placed.job, "interrupted", "stopped; resumes from its last saved state")
            self._record(self.store.get(placed.job.id))
            self.placed.remove(placed)

    def _nothing_to_start(self) -> bool:
        if self.store.paused():
            return True
        return not self.store.next_queued(self._widest_gpus())

    # --- recovery ------------------------------------------------------------------------------------

    def _recover(self) -> None:
        self._last_recover = time.monotonic()
        recovery = self.store.recover()
        recovery.announce(self.notify)
        for job in recovery.orphans:
            self.notify(
                f"job {job.id}: {job.run_dir.name} still trains for a runner that is gone (process group "
                f"{job.pgid}); it starts again once that stops"
            )

    def _note_too_wide(self) -> None:
        widest = self._widest_gpus()
        if widest is None:
            return
        for job in self.store.next_queued():
            if job.gpus > widest:
                self.notify(
                    f"job {job.id}: {job.run_dir.name} needs {job.gpus} GPUs on one machine; the widest node "
                    f"has {widest}, so it waits"
                )

    # --- placing jobs --------------------------------------------------------------------------------

    def _widest_gpus(self) -> int | None:
        """GPUs of the widest node (None: the cluster has no GPU, runs train on CPUs)."""
        widest = max((node.gpus for node in alive_nodes()), default=0)
        return widest or None

    def _start_jobs(self) -> None:
        if self.store.paused():
            return
        nodes = alive_nodes()
        total_gpus = sum(node.gpus for node in nodes)
        total_cpus = sum(node.cpus for node in nodes)
        widest_gpus = max((node.gpus for node in nodes), default=0)
        widest_cpus = max((node.cpus for node in nodes), default=0)
        while True:
            free_gpus = total_gpus - sum(p.gpus for p in self.placed)
            free_cpus = total_cpus - sum(p.cpus for p in self.placed)
            if free_cpus < 1 or (total_gpus and free_gpus < 1):
                return
            # Claim only what can start now: a job waiting inside Ray would be held away from other runners.
            job = self.store.claim(self.claimant, min(free_gpus, widest_gpus) if total_gpus else None)
            if job is None:
                return
            if problem := multi_machine_problem(job):
                self.store.finish(job, "failed", problem)
                self._record(self.store.get(job.id))
                continue
            gpus, cpus = reservation(job, total_gpus > 0, widest_cpus)
            ref = self._task.options(
                num_gpus=gpus, num_cpus=cpus, max_retries=0, name=f"kohya-wrap job {job.id}"
            ).remote(job)
            # Running from now on for `queue list` (its progress shows); Ray starts it as soon as it is placed.
            self.store.mark_running(job, None)
            self.placed.append(Placed(job, ref, gpus, cpus))
            saved = job.resume and any(RunLayout(job.run_dir).output_dir.glob("*-state"))
            what = f"{gpus} GPU{'s' if gpus != 1 else ''}, {cpus} CPU{'s' if cpus != 1 else ''}"
            self.notify(f"job {job.id}: {'resuming' if saved else 'starting'} {job.run_dir.name} on Ray ({what})")

    def _stop_cancelled(self) -> None:
        for placed in self.placed:
            if placed.cancelled_at is None and self.store.get(placed.job.id).state == "cancelled":
                self.notify(f"job {placed.job.id}: cancelled; stopping {placed.job.run_dir.name}")
                self._cancel(placed)

    # --- following tasks -----------------------------------------------------------------------------

    def _collect(self) -> None:
        """Wait a moment for tasks to end, then settle what ended."""
        live = [p.ref for p in self.placed if p.died is None]
        if not live:
            time.sleep(POLL_S)
            ready: list[Any] = []
        else:
            ready, _ = self._ray.wait(live, num_returns=len(live), timeout=POLL_S)
        for placed in [p for p in self.placed if p.died is None and p.ref in ready]:
            self._settle(placed)
        for placed in [p for p in self.placed if p.died is not None]:
            self._settle_dead(placed)

    def _settle(self, placed: Placed) -> None:
        exceptions = self._ray.exceptions
        job = placed.job
        try:
            report: TaskReport = self._ray.get(placed.ref)
        except exceptions.TaskCancelledError:
            # Cancelled before it started on a node: nothing trained.
            self.store.finish(job, "interrupted", "stopped before it started")
            self._done(placed)
            return
        except exceptions.RayError as exc:
            placed.died = _first_line(exc)
            placed.died_at = time.monotonic()
            placed.node_lost = isinstance(exc, exceptions.NodeDiedError | exceptions.LocalRayletDiedError)
            self.notify(f"job {job.id}: its Ray task died ({placed.died}); waiting for the run to stop")
            self._settle_dead(placed)
            return
        if report.gpu_ids:
            self.store.mark_running(job, None, report.gpu_ids)  # where it trained, for `queue list`
        if report.state is not None:
            self.store.finish(job, report.state, report.reason)
        else:
            log = job.run_dir / WORKER_LOG
            self.store.finish(
                job, "failed", f"its worker exited with code {report.exit_code} on {report.host} (see {log})"
            )
        self._done(placed)

    def _settle_dead(self, placed: Placed) -> None:
        """A dead task's worker stops the run cleanly itself (run.json says so); a lost node's never will."""
        job = placed.job
        row = self.store.get(job.id)
        if row.state in ACTIVE_STATES and row.attempts == job.attempts:
            try:
                record: RunRecord | None = read_record(RunLayout(job.run_dir))
            except KohyaWrapError:
                record = None
            status = record.status if record is not None else None
            if status == "running" and not placed.node_lost and time.monotonic() - placed.died_at < REPORT_GRACE_S:
                return
            if record is not None and status == "finished":
                self.store.finish(job, "done", record.reason or "completed")
            elif record is not None and status == "failed":
                self.store.finish(job, "failed", record.reason)
            elif status == "interrupted":
                self.store.finish(
                    job, "interrupted", f"its Ray task died ({placed.died}); resumes from its last saved state"
                )
            else:
                self._crashes[job.id] = self._crashes.get(job.id, 0) + 1
                if self._crashes[job.id] > 1:
                    self.store.finish(job, "failed", f"its Ray task died a second time: {placed.died}")
                else:
                    self.store.finish(
                        job, "interrupted", f"its Ray task died ({placed.died}); resumes from its last saved state"
                    )
        self._done(placed)

    def _done(self, placed: Placed) -> None:
        self.placed.remove(placed)
        job = self.store.get(placed.job.id)
        if job.state == "interrupted" and not self._signals:
            # Its task died under it: the run is queued again right away and resumes in this runner.
            self.notify(f"job {job.id}: {job.run_dir.name} interrupted: {job.reason}")
            self._recover()
            return
        self._record(job)

    def _record(self, job: Job) -> None:
        self.result.record(job, self.notify, requeued_is_interrupted=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_queue(runs_dir: Path, notify: Notify, address: str, until_empty: bool = False) -> RunnerResult:
    """Run the queue of `runs_dir` on the Ray cluster at `address` (blocks until Ctrl-C, or until empty)."""
    import_ray()
    folder = runs_dir.expanduser().resolve()
    connected = connect(address)
    try:
        nodes = alive_nodes()
        check_shared_storage(folder, nodes)
        gpus = sum(node.gpus for node in nodes)
        notify(
            f"ray: {len(nodes)} node{'s' if len(nodes) != 1 else ''}, {gpus} GPU{'s' if gpus != 1 else ''}; "
            f"runs folder {folder} is shared"
        )
        with QueueStore(folder) as store:
            return RayRunner(store, notify).run(until_empty)
    finally:
        if connected:
            disconnect()


def configured_address(runs_dir: Path) -> str | None:
    """The Ray address the queued runs ask for (`run.executor = "ray"`), or None when they ask for local.

    Runs that disagree (some Ray, some local, or two addresses) are refused: `--ray` decides for them.
    """
    folder = runs_dir.expanduser().resolve()
    if not (folder / "queue.sqlite3").exists():
        return None
    with QueueStore(folder) as store:
        jobs = store.list(["queued", "interrupted"])
    wanted: dict[str | None, list[int]] = {}
    for job in jobs:
        wanted.setdefault(_executor_address(job.run_dir), []).append(job.id)
    if len(wanted) <= 1:
        return next(iter(wanted), None)
    parts = [
        f"job{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))} for "
        + (f"Ray at {addr}" if addr else "this machine")
        for addr, ids in wanted.items()
    ]
    raise QueueError(
        f"queue run: the queued runs ask for different executors (run.executor): {'; '.join(parts)}; "
        "choose one for all with `--ray ADDRESS`, or queue them in different runs folders"
    )


def _executor_address(run_dir: Path) -> str | None:
    with contextlib.suppress(OSError, tomllib.TOMLDecodeError):
        run = tomllib.loads(RunLayout(run_dir).config.read_text("utf-8")).get("run", {})
        if run.get("executor") == "ray":
            return str(run.get("ray_address", "auto"))
    return None


if __name__ == "__main__":
    sys.exit(work(int(sys.argv[1])))
