"""What earlier runs took: where a run's wall time went, and the speed of this machine's runs with the same settings."""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kohya_wrap.errors import RunError
from kohya_wrap.train.layout import RunLayout

# The events module is imported inside the functions that read events: `validate` estimates with this module
# and reads no events unless earlier runs exist, so its start-up does not pay for them.
if TYPE_CHECKING:
    from kohya_wrap.config.models import Config
    from kohya_wrap.train import events as ev

# ---- what earlier runs took -------------------------------------------------------------------------

Segment = Literal["startup", "training", "sampling", "saving"]
_STARTUP_PHASES = frozenset(
    {"loading_model", "hashing_model", "caching_latents", "caching_text_encoder_outputs", "preparing_network"}
)


@dataclass(frozen=True)
class RunTimings:
    """Where one attempt's wall time went, from its timed events (seconds)."""

    seconds: Mapping[Segment, float]
    steps: int  # distinct steps trained in this attempt
    samples: int
    saves: int

    @property
    def wall(self) -> float:
        return sum(self.seconds.values())

    @property
    def step_seconds(self) -> float | None:
        return self.seconds["training"] / self.steps if self.steps else None

    @property
    def sample_seconds(self) -> float | None:
        return self.seconds["sampling"] / self.samples if self.samples else None


def _segment(event: ev.Event, previous: Segment) -> Segment:
    from kohya_wrap.train import events as ev

    if isinstance(event, ev.Phase) and event.name in _STARTUP_PHASES:
        return "startup"
    if isinstance(event, ev.Phase) and event.name == "sampling" or isinstance(event, ev.SampleSaved):
        return "sampling"
    if isinstance(event, ev.CheckpointSaved | ev.StateSaved | ev.EpochFinished | ev.RunFinished):
        return "saving"
    if isinstance(event, ev.RunStarted | ev.EpochStarted | ev.Step):
        return "training"
    return previous


def read_events(layout: RunLayout) -> list[tuple[ev.Event, float | None]]:
    """Every readable event of a run with its time; a line cut short by a killed run is skipped."""
    from kohya_wrap.train import events as ev

    try:
        lines = layout.events.read_text("utf-8").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        try:
            found.append(ev.from_json_timed(line))
        except (ValueError, TypeError):
            continue
    return found


def last_attempt(timed: Sequence[tuple[ev.Event, float | None]]) -> list[tuple[ev.Event, float]]:
    """The timed events of the newest attempt (a resumed run appends one attempt after another)."""
    from kohya_wrap.train import events as ev

    attempt: list[tuple[ev.Event, float]] = []
    for event, t in timed:
        if t is None:
            continue
        if attempt and isinstance(attempt[-1][0], ev.RunFinished):
            attempt = []
        attempt.append((event, t))
    return attempt


def run_timings(
    timed: Sequence[tuple[ev.Event, float]], started: float | None = None, ended: float | None = None
) -> RunTimings:
    """Split one attempt's wall time into startup, training, sampling and saving.

    Each interval between two events belongs to the state the first one began; `started` (the launch)
    adds the child's start-up before its first event, `ended` the wait after its last.
    """
    from kohya_wrap.train import events as ev

    seconds: dict[Segment, float] = {"startup": 0.0, "training": 0.0, "sampling": 0.0, "saving": 0.0}
    if not timed:
        return RunTimings(seconds, 0, 0, 0)
    if started is not None and timed[0][1] > started:
        seconds["startup"] += timed[0][1] - started
    segment: Segment = "startup"
    steps: set[int] = set()
    samples = saves = 0
    for i, (event, t) in enumerate(timed):
        segment = _segment(event, segment)
        following = timed[i + 1][1] if i + 1 < len(timed) else ended
        if following is not None and following > t:
            seconds[segment] += following - t
        if isinstance(event, ev.Step):
            steps.add(event.step)
        samples += isinstance(event, ev.SampleSaved)
        saves += isinstance(event, ev.CheckpointSaved)
    return RunTimings(seconds, len(steps), samples, saves)


@dataclass(frozen=True)
class SpeedKey:
    """What decides the time of a step; runs agreeing on all of it are comparable."""

    family: str
    resolution: int
    batch_size: int
    mixed_precision: str
    gradient_checkpointing: bool


def speed_key(cfg: Config) -> SpeedKey:
    tr, res = cfg.training, cfg.dataset.resolution
    return SpeedKey(cfg.model.family, res, tr.batch_size, tr.mixed_precision, tr.gradient_checkpointing)


def _key_from_toml(doc: Mapping[str, Any]) -> SpeedKey | None:
    try:
        tr = doc["training"]
        return SpeedKey(
            str(doc["model"]["family"]),
            int(doc["dataset"]["resolution"]),
            int(tr["batch_size"]),
            str(tr["mixed_precision"]),
            bool(tr.get("gradient_checkpointing", False)),
        )
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Measured:
    """The speed one earlier run on this machine showed."""

    run: Path
    key: SpeedKey
    timings: RunTimings
    sample_steps: float  # mean sampling steps of its prompts


def iso_seconds(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def measure_run(root: Path) -> Measured | None:
    """What a run folder's events say about its speed; None without enough steps to say anything."""
    # Imported here: `validate` estimates without earlier runs' files, and need not load the run-folder code.
    from kohya_wrap.train.runs import read_config_toml, read_record, sample_prompts

    layout = RunLayout(root)
    try:
        key = _key_from_toml(read_config_toml(layout))
        record = read_record(layout)
    except (RunError, TypeError, AttributeError):  # not a run, or a run.json of another shape
        return None
    if key is None:
        return None
    attempt = last_attempt(read_events(layout))
    timings = run_timings(attempt, iso_seconds(record.started), iso_seconds(record.ended))
    if timings.steps < 2:
        return None
    prompts = sample_prompts(layout)
    try:
        sample_steps = statistics.fmean(float(p.get("sample_steps", 20)) for p in prompts) if prompts else 0.0
    except (ValueError, TypeError):
        sample_steps = 0.0
    return Measured(root, key, timings, sample_steps)


def measured_runs(runs_dir: Path, limit: int = 20) -> list[Measured]:
    """The newest `limit` runs under `runs_dir` that trained at least two steps, newest first."""
    if not runs_dir.is_dir():
        return []
    roots = sorted(
        (p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    found: list[Measured] = []
    for root in roots:
        if len(found) >= limit:
            break
        if (measured := measure_run(root)) is not None:
            found.append(measured)
    return found
