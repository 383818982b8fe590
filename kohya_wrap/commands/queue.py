"""Queue workflows: add configs, list with live progress, cancel, retry, remove, pause, resume, run.

Plain functions over `QueueStore` for the CLI, the Ray executor and the web app; none of them prints.
Bad input raises a `KohyaWrapError` before anything is written.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kohya_wrap.errors import ConfigError
from kohya_wrap.queue.store import DB_NAME, HOLDING_STATES, Job, NewJob, QueueError, QueueStore
from kohya_wrap.train import events as ev
from kohya_wrap.train.layout import RunLayout

if TYPE_CHECKING:
    from kohya_wrap.commands.train import TrainingInput
    from kohya_wrap.queue.local import RunnerResult

# events.jsonl grows by a line per step; the newest progress is in its last few kilobytes.
EVENTS_TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class Progress:
    """Where a running run is, from the tail of its events.jsonl (None where it has not said yet)."""

    epoch: int | None
    epochs: int | None
    step: int | None
    total_steps: int | None
    loss: float | None
    eta_s: float | None


@dataclass(frozen=True)
class QueueEntry:
    """A queue row with the progress of its run when it is running."""

    job: Job
    progress: Progress | None

    def to_json(self) -> dict[str, Any]:
        """The entry as JSON-ready data (`queue list --json`, the web app)."""
        job = self.job
        return {
            "id": job.id,
            "state": job.state,
            "run_dir": str(job.run_dir),
            "name": job.run_dir.name,
            "priority": job.priority,
            "sweep": job.sweep,
            "gpus": job.gpus,
            "gpu_ids": list(job.gpu_ids),
            "attempts": job.attempts,
            "resume": job.resume,
            "reason": job.reason,
            "claimant": None
            if job.claimant is None
            else {"host": job.claimant.host, "pid": job.claimant.pid, "start": job.claimant.start},
            "pgid": job.pgid,
            "created": job.created,
            "updated": job.updated,
            "claimed_at": job.claimed_at,
            "progress": None if self.progress is None else self.progress.__dict__,
        }


@dataclass(frozen=True)
class QueueStatus:
    """The whole queue: its entries in the order they were added, and whether it is paused."""

    entries: tuple[QueueEntry, ...]
    paused: bool


def open_queue(runs_dir: Path, create: bool = True) -> QueueStore:
    """The queue of `runs_dir`; with `create=False` a missing queue is an error instead of a new file."""
    folder = runs_dir.expanduser().resolve()
    if not create and not (folder / DB_NAME).exists():
        raise QueueError(f"queue: no queue in {folder}; add runs with `kohya-wrap queue add CONFIG` or `sweep`")
    return QueueStore(folder)


def check_configs(
    configs: Sequence[Path], overrides: Sequence[str] = (), preset: str | None = None
) -> list[TrainingInput]:
    """Load and check every config for training (nothing written); all problems raised together."""
    from kohya_wrap.commands.train import check_training, load, require_launchable
    from kohya_wrap.errors import KohyaWrapError

    if not configs and preset is None:
        raise ConfigError("queue add: give at least one config file")
    checked: list[TrainingInput] = []
    problems: list[str] = []
    sources: list[Path | None] = list(configs) or [None]
    for config in sources:
        try:
            one = check_training(load(config, tuple(overrides), preset))
            require_launchable(one)
            checked.append(one)
        except KohyaWrapError as exc:
            prefix = f"{config}: " if len(configs) > 1 else ""
            problems += [prefix + line for line in exc.lines]
    if problems:
        raise ConfigError(*problems)
    return checked


def add(checked: Sequence[TrainingInput], priority: int = 0) -> list[Job]:
    """Create a planned run folder for each checked config and queue it in its runs folder's queue."""
    from kohya_wrap.commands.train import create
    from kohya_wrap.queue.worker import gpus_needed
    from kohya_wrap.train.runs import runs_dir

    by_folder: dict[Path, list[TrainingInput]] = {}
    for one in checked:
        by_folder.setdefault(runs_dir(one.loaded.config), []).append(one)
    stores = {folder: open_queue(folder) for folder in by_folder}  # a bad database fails before any folder
    jobs: list[Job] = []
    created: list[Path] = []
    try:
        for folder, group in by_folder.items():
            paths = [create(one).root for one in group]
            created += paths
            jobs += stores[folder].add_all(NewJob(path, priority, None, gpus_needed(path)) for path in paths)
    except BaseException:
        queued = {job.run_dir for job in jobs}
        for path in created:
            if path not in queued:
                shutil.rmtree(path, ignore_errors=True)
        raise
    finally:
        for store in stores.values():
            store.close()
    return jobs


def active_job(run_dir: Path) -> Job | None:
    """The queue job that holds `run_dir` (queued, claimed or running) in its runs folder's queue, if any."""
    folder = run_dir.expanduser().resolve()
    if not (folder.parent / DB_NAME).is_file():
        return None
    with open_queue(folder.parent, create=False) as store:
        jobs = store.list(HOLDING_STATES)
    return next((job for job in jobs if job.run_dir.resolve() == folder), None)


def queue_resume(run_dir: Path, priority: int = 0) -> Job:
    """Queue an existing run folder to continue from its last saved state (a run stopped outside the queue)."""
    from kohya_wrap.commands.train import open_run, resumable
    from kohya_wrap.queue.worker import gpus_needed
    from kohya_wrap.train.runs import read_record

    layout = open_run(run_dir)
    record = read_record(layout)
    if not resumable(record):
        raise QueueError(f"queue: {layout.root.name} is {record.status}; only an interrupted or failed run resumes")
    if (held := active_job(layout.root)) is not None:
        raise QueueError(f"queue: {layout.root.name} is already job {held.id} ({held.state})")
    with open_queue(layout.root.parent) as store:
        (job,) = store.add_all([NewJob(layout.root, priority, None, gpus_needed(layout.root), resume=True)])
    return job


def status(runs_dir: Path) -> QueueStatus:
    """Every row of the queue with the progress of the running ones (an empty status when there is no queue)."""
    folder = runs_dir.expanduser().resolve()
    if not (folder / DB_NAME).exists():
        return QueueStatus((), False)
    with QueueStore(folder) as store:
        jobs = store.list()
        paused = store.paused()
    return QueueStatus(
        tuple(QueueEntry(job, read_progress(job.run_dir) if job.state == "running" else None) for job in jobs), paused
    )


def read_progress(run_dir: Path) -> Progress:
    """Epoch, step, loss and ETA from the last events of a run (reads only the end of events.jsonl)."""
    path = RunLayout(run_dir).events
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - EVENTS_TAIL_BYTES))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return Progress(None, None, None, None, None, None)
    epoch = epochs = step = total = None
    loss = eta = None
    # Newest first, parsing only what is still missing: the last step is the last line, the epoch's
    # start some hundred lines before it.
    for line in reversed(tail.splitlines()):
        if step is not None and "epoch_started" not in line and "run_started" not in line:
            continue
        try:
            event = ev.from_json(line)
        except (ValueError, TypeError):
            continue  # the first line of the tail is usually cut
        if isinstance(event, ev.Step) and step is None:
            step, total, loss, eta = event.step, event.total, event.loss, event.eta_s
        elif isinstance(event, ev.EpochStarted) and epoch is None:
            epoch, epochs = event.epoch, event.total
        elif isinstance(event, ev.RunStarted):
            epochs = epochs if epochs is not None else event.epochs
            total = total if total is not None else event.total_steps
            break
        if step is not None and epoch is not None:
            break
    return Progress(epoch, epochs, step, total, loss, eta)


def parse_ids(texts: Sequence[str], verb: str) -> list[int]:
    """Job IDs as given on the command line."""
    bad = [text for text in texts if not text.isdigit()]
    if bad:
        raise QueueError(*[f"queue {verb}: '{b}' is not a job ID; see `kohya-wrap queue list`" for b in bad])
    if not texts:
        raise QueueError(f"queue {verb}: give at least one job ID (see `kohya-wrap queue list`)")
    return [int(text) for text in texts]


def cancel(runs_dir: Path, ids: Sequence[int]) -> list[Job]:
    """Cancel jobs; a runner stops the running ones cleanly (their run folders stay resumable)."""
    with open_queue(runs_dir, create=False) as store:
        return store.cancel(ids)


def retry(runs_dir: Path, ids: Sequence[int]) -> list[Job]:
    """Queue failed, cancelled or interrupted jobs again (they continue from their last saved state)."""
    with open_queue(runs_dir, create=False) as store:
        return store.retry(ids)


def set_priority(runs_dir: Path, ids: Sequence[int], priority: int) -> list[Job]:
    """Change when queued jobs run (higher first)."""
    with open_queue(runs_dir, create=False) as store:
        return store.set_priority(ids, priority)


def remove(runs_dir: Path, ids: Sequence[int]) -> list[Job]:
    """Delete queue rows; their run folders stay."""
    with open_queue(runs_dir, create=False) as store:
        return store.remove(ids)


def pause(runs_dir: Path) -> None:
    """Runners start no new run until `resume`; running runs go on."""
    with open_queue(runs_dir, create=False) as store:
        store.pause()


def resume(runs_dir: Path) -> None:
    """Runners start queued runs again."""
    with open_queue(runs_dir, create=False) as store:
        store.resume()


def run(
    runs_dir: Path,
    notify: Callable[[str], None],
    gpus: Sequence[int] | None = None,
    per_run: int = 1,
    until_empty: bool = False,
) -> RunnerResult:
    """Run the queue on this machine's GPUs (blocks until Ctrl-C, or until empty with `until_empty`)."""
    from kohya_wrap.queue.local import LocalRunner, detect_gpus, plan_slots

    slots = plan_slots(gpus, per_run, detect_gpus())
    with open_queue(runs_dir) as store:
        return LocalRunner(store, slots, notify).run(until_empty)


@dataclass(frozen=True)
class QueueRun:
    """What a `queue run` did, and the queued jobs no slot of this runner was wide enough for."""

    result: RunnerResult
    waiting: tuple[Job, ...] = ()


def run_queue(
    runs_dir: Path,
    notify: Callable[[str], None],
    gpus: Sequence[int] | None = None,
    per_run: int = 1,
    until_empty: bool = False,
    ray_address: str | None = None,
) -> QueueRun:
    """Run the queue where it belongs: on the Ray cluster given (or named by the queued configs'
    `run.executor = "ray"`), else on this machine's GPUs cut into slots of `per_run`."""
    address = ray_address or configured_ray_address(runs_dir)
    if address is None:
        result = run(runs_dir, notify, gpus, per_run, until_empty)
        return QueueRun(result, tuple(waiting_for_wider_slots(runs_dir, per_run)))
    if gpus is not None or per_run != 1:
        raise ConfigError(
            "queue run --ray: --gpus and --per-run choose this machine's GPUs; on Ray each run reserves its own "
            "(its run.num_processes) on some node, so drop them"
        )
    return QueueRun(run_on_ray(runs_dir, notify, address, until_empty))


def run_on_ray(runs_dir: Path, notify: Callable[[str], None], address: str, until_empty: bool = False) -> RunnerResult:
    """Run the queue on the Ray cluster at `address` (`auto`, `local` or HOST:PORT; needs the `ray` extra)."""
    from kohya_wrap.queue.ray_executor import run_queue

    return run_queue(runs_dir, notify, address, until_empty)


def configured_ray_address(runs_dir: Path) -> str | None:
    """The Ray address the queued runs' configs ask for (`run.executor = "ray"`); None: this machine."""
    from kohya_wrap.queue.ray_executor import configured_address

    return configured_address(runs_dir)


def waiting_for_wider_slots(runs_dir: Path, per_run: int) -> list[Job]:
    """Queued jobs that need more GPUs than a slot of `per_run` has (they wait for another runner)."""
    folder = runs_dir.expanduser().resolve()
    if not (folder / DB_NAME).exists():
        return []
    with QueueStore(folder) as store:
        return [job for job in store.list(["queued"]) if job.gpus > per_run]
