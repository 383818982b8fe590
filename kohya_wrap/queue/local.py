"""The local executor: GPU slots on this machine, each training one queued run at a time in a worker process.

Several runners may share one runs folder (claims are atomic). On start a runner recovers what a dead
runner left: a worker still training for it is stopped cleanly and its run resumed from its last saved
state in the same folder; a run whose processes are all gone is resumed once, then failed.
Ctrl-C (or SIGTERM) stops the running runs cleanly (interrupted, resumable) and leaves queued ones queued.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from kohya_wrap.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_TRAINING_FAILED, ConfigError
from kohya_wrap.procs import group_alive
from kohya_wrap.queue.store import ACTIVE_STATES, Claimant, Job, QueueStore
from kohya_wrap.queue.worker import STOP_GRACE_S, WORKER_LOG, kill_tree, signal_group, start_worker, stop_trainers

Notify = Callable[[str], None]
POLL_S = 0.5
RECOVER_EVERY_S = 10.0


def detect_gpus() -> list[int] | None:
    """CUDA GPU indices from nvidia-smi (fast: no torch, no CUDA init); None where there is no NVIDIA GPU."""
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    ids = [int(line) for line in done.stdout.split() if line.strip().isdigit()]
    return ids or None


def parse_gpus(text: str) -> list[int]:
    """`--gpus 0,1,2,3` → [0, 1, 2, 3] (ConfigError for anything else)."""
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--gpus: '{text}' must be GPU indices separated by commas, e.g. 0,1,2,3") from None
    if not ids or any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"--gpus: '{text}' must be distinct GPU indices separated by commas, e.g. 0,1,2,3")
    return ids


def plan_slots(gpus: Sequence[int] | None, per_run: int, available: Sequence[int] | None) -> list[tuple[int, ...]]:
    """GPU sets, one per slot: `gpus` (default: every GPU found) cut into groups of `per_run`.

    Without CUDA and without `--gpus` there is one slot that leaves each run's own device settings alone.
    """
    if per_run < 1:
        raise ConfigError(f"--per-run: must be 1 or more (got {per_run})")
    if gpus is not None and available is not None:
        missing = [g for g in gpus if g not in available]
        if missing:
            raise ConfigError(
                f"--gpus: no GPU {', '.join(map(str, missing))} on this machine (found "
                f"{', '.join(map(str, available))}); see `nvidia-smi`"
            )
    chosen = list(gpus) if gpus is not None else list(available or [])
    if not chosen:
        if per_run > 1:
            raise ConfigError(f"--per-run: {per_run} GPUs per run, but this machine has no GPU; use --per-run 1")
        return [()]
    if per_run > len(chosen):
        count = f"{len(chosen)} GPU" + ("s" if len(chosen) > 1 else "")
        raise ConfigError(f"--per-run: {per_run} GPUs per run, but only {count} to use ({_ids(chosen)})")
    return [tuple(chosen[i : i + per_run]) for i in range(0, len(chosen) - per_run + 1, per_run)]


def _ids(ids: Sequence[int]) -> str:
    return ",".join(str(i) for i in ids)


@dataclass
class Slot:
    gpu_ids: tuple[int, ...]
    job: Job | None = None
    proc: subprocess.Popen[bytes] | None = None
    stop_sent: float | None = None


@dataclass
class RunnerResult:
    """What one `queue run` did: the jobs it finished by outcome, and whether it was interrupted."""

    done: list[Job] = field(default_factory=list)
    failed: list[Job] = field(default_factory=list)
    interrupted: list[Job] = field(default_factory=list)
    cancelled: list[Job] = field(default_factory=list)
    stopped_by_signal: bool = False

    @property
    def exit_code(self) -> int:
        if self.stopped_by_signal:
            return EXIT_INTERRUPTED
        return EXIT_TRAINING_FAILED if self.failed else EXIT_OK

    def record(self, job: Job, notify: Notify, requeued_is_interrupted: bool = False) -> None:
        """File a job that has ended under its outcome and say so; a job queued again counts as interrupted
        with `requeued_is_interrupted` (the Ray runner, whose queued-again jobs resume elsewhere)."""
        outcomes = {
            "done": self.done,
            "failed": self.failed,
            "interrupted": self.interrupted,
            "cancelled": self.cancelled,
        }
        if requeued_is_interrupted:
            outcomes["queued"] = self.interrupted
        if (outcome := outcomes.get(job.state)) is not None:
            outcome.append(job)
        reason = f": {job.reason}" if job.reason and job.state != "done" else ""
        notify(f"job {job.id}: {job.run_dir.name} {job.state}{reason}")


class LocalRunner:
    """Runs the queue of one runs folder on this machine's GPU slots until stopped (or empty)."""

    def __init__(self, store: QueueStore, slots: Sequence[tuple[int, ...]], notify: Notify) -> None:
        self.store = store
        self.slots = [Slot(ids) for ids in slots]
        self.notify = notify
        self.claimant = Claimant.current()
        self.result = RunnerResult()
        self._signals = 0
        self._orphans: dict[int, tuple[Job, float]] = {}  # pgid → (job, when it was told to stop)
        self._last_recover = 0.0

    # --- the loop ------------------------------------------------------------------------------------

    def run(self, until_empty: bool) -> RunnerResult:
        """Claim and train jobs until Ctrl-C (or, with `until_empty`, until nothing is left to start)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        slots = " · ".join(f"GPU {_ids(slot.gpu_ids)}" for slot in self.slots if slot.gpu_ids)
        self.notify(f"queue {self.store.runs_dir}: " + (f"one run per slot: {slots}" if slots else "one run at a time"))
        try:
            self._recover()
            while True:
                self._reap()
                if self._signals:
                    if not self._busy():
                        break
                    self._escalate()
                else:
                    if time.monotonic() - self._last_recover >= (1.0 if self._orphans else RECOVER_EVERY_S):
                        self._recover()
                    self._stop_cancelled()
                    self._start_jobs()
                    if until_empty and not self._busy() and not self._orphans and self._nothing_to_start():
                        break
                time.sleep(POLL_S)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._busy():
                # Only reached on an unexpected error: leave no trainer running unsupervised.
                for slot in self.slots:
                    if slot.proc is not None and slot.proc.poll() is None:
                        kill_tree(slot.proc.pid)
        self.result.stopped_by_signal = self._signals > 0
        return self.result

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            self.notify("stopping: running runs stop cleanly and stay resumable; queued runs stay queued")
        sig = signal.SIGINT if self._signals == 1 else signal.SIGTERM
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                signal_group(slot.proc.pid, sig)
                slot.stop_sent = slot.stop_sent or time.monotonic()

    def _escalate(self) -> None:
        """A worker that ignores the stop for too long is killed with everything it started."""
        for slot in self.slots:
            if slot.proc is not None and slot.stop_sent and time.monotonic() - slot.stop_sent > 2 * STOP_GRACE_S:
                kill_tree(slot.proc.pid)

    def _busy(self) -> bool:
        return any(slot.proc is not None for slot in self.slots)

    def _nothing_to_start(self) -> bool:
        if self.store.paused():
            return True
        widest = max(len(slot.gpu_ids) for slot in self.slots) or None
        return self.store.count_queued(widest) == 0

    # --- recovery ------------------------------------------------------------------------------------

    def _recover(self) -> None:
        self._last_recover = time.monotonic()
        recovery = self.store.recover()
        recovery.announce(self.notify)
        for job in recovery.orphans:
            assert job.pgid is not None
            if job.pgid in self._orphans:
                continue
            # Its runner is gone but its trainer still writes the run folder: stop it cleanly (it records
            # `interrupted`), then the run resumes from its last saved state under this runner.
            self.notify(f"job {job.id}: {job.run_dir.name} still trains for a runner that is gone; stopping it")
            signal_group(job.pgid, signal.SIGINT)
            self._orphans[job.pgid] = (job, time.monotonic())
        for pgid, (_, since) in list(self._orphans.items()):
            if not group_alive(pgid):
                del self._orphans[pgid]
            elif time.monotonic() - since > 2 * STOP_GRACE_S:
                kill_tree(pgid)

    # --- starting and following workers --------------------------------------------------------------

    def _start_jobs(self) -> None:
        if self.store.paused():
            return
        for slot in self.slots:
            if slot.proc is not None:
                continue
            # A read first: an idle runner polling an empty queue takes no write lock.
            if self._signals or self.store.count_queued(len(slot.gpu_ids) or None) == 0:
                continue
            job = self.store.claim(self.claimant, len(slot.gpu_ids) or None)
            if job is None:
                return
            gpu_ids = slot.gpu_ids[: job.gpus] if slot.gpu_ids else ()
            try:
                proc = start_worker(self.store.runs_dir, job, gpu_ids)
            except OSError as exc:
                self.store.finish(job, "failed", f"cannot start its worker: {exc.strerror}")
                self.result.failed.append(self.store.get(job.id))
                self.notify(f"job {job.id}: {job.run_dir.name} failed: cannot start its worker: {exc.strerror}")
                continue
            # Recorded before the worker can train, so a runner killed now still leaves its trainer findable.
            self.store.record_child(job, proc.pid)
            slot.job, slot.proc, slot.stop_sent = job, proc, None
            if self._signals:  # Ctrl-C came while it was being started: it stops like the others
                signal_group(proc.pid, signal.SIGINT)
                slot.stop_sent = time.monotonic()
            on = f" on GPU {_ids(gpu_ids)}" if gpu_ids else ""
            saved = job.resume and any((job.run_dir / "output").glob("*-state"))
            verb = "resuming" if saved else "starting"
            self.notify(f"job {job.id}: {verb} {job.run_dir.name}{on}")

    def _stop_cancelled(self) -> None:
        for slot in self.slots:
            if slot.job is None or slot.proc is None or slot.stop_sent:
                continue
            if self.store.get(slot.job.id).state == "cancelled":
                self.notify(f"job {slot.job.id}: cancelled; stopping {slot.job.run_dir.name}")
                signal_group(slot.proc.pid, signal.SIGINT)
                slot.stop_sent = time.monotonic()

    def _reap(self) -> None:
        for slot in self.slots:
            if slot.proc is None or slot.job is None or slot.proc.poll() is None:
                continue
            code = slot.proc.returncode
            # The worker has exited; nothing it started may outlive it (sd-scripts runs in its own session).
            kill_tree(slot.proc.pid)
            stop_trainers(slot.job.run_dir)
            job = self.store.get(slot.job.id)
            if job.state in ACTIVE_STATES and job.attempts == slot.job.attempts:
                how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
                if slot.stop_sent and job.state == "claimed":
                    # Stopped by us before it could begin training: nothing ran, nothing crashed.
                    self.store.finish(slot.job, "interrupted", "stopped before training began")
                else:
                    # It died without recording an outcome (killed, out of memory): resumed once, then failed.
                    self.store.crashed(slot.job, f"its worker {how} (see {job.run_dir / WORKER_LOG})")
                job = self.store.get(job.id)
            self.result.record(job, self.notify)
            slot.job, slot.proc, slot.stop_sent = None, None, None
