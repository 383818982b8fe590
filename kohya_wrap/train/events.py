"""What happened during a training run, as frozen dataclasses with a versioned JSON-lines form."""

from __future__ import annotations

import json
import math
import typing
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final, Literal, TypeAlias

# Version 2 added the `validation` event and the `validating` phase; a version-1 line reads as version 2.
SCHEMA_VERSION: Final = 2
READABLE_VERSIONS: Final = frozenset({1, SCHEMA_VERSION})

ErrorKind: TypeAlias = Literal["oom", "nan", "missing_file", "import", "config", "no_data", "unknown"]
PhaseName: TypeAlias = Literal[
    "loading_model",
    "hashing_model",
    "caching_latents",
    "caching_text_encoder_outputs",
    "preparing_network",
    "sampling",
    "validating",
]


@dataclass(frozen=True, slots=True)
class RunStarted:
    """sd-scripts printed its training plan; None where the log did not say."""

    KIND: ClassVar[Literal["run_started"]] = "run_started"
    script: str | None
    total_steps: int | None
    epochs: int | None
    batches_per_epoch: int | None
    images: int | None  # training images times repeats


@dataclass(frozen=True, slots=True)
class Phase:
    """A long stretch without progress began; the time until the next event is spent in it."""

    KIND: ClassVar[Literal["phase"]] = "phase"
    name: PhaseName
    detail: str


@dataclass(frozen=True, slots=True)
class Step:
    """One redraw of the training bar that changed the step or the loss.

    sd-scripts redraws the bar when a step ends (still showing the previous loss) and again with
    the new `avr_loss`, so the last Step of each step number carries that step's loss.
    """

    KIND: ClassVar[Literal["step"]] = "step"
    step: int
    total: int
    loss: float | None  # the bar's avr_loss (a moving average); nan once the loss diverged
    rate: float | None  # it/s
    eta_s: float | None
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class EpochStarted:
    """An epoch began (epochs count from 1)."""

    KIND: ClassVar[Literal["epoch_started"]] = "epoch_started"
    epoch: int
    total: int


@dataclass(frozen=True, slots=True)
class EpochFinished:
    """An epoch ended, with its checkpoint, state and samples written."""

    KIND: ClassVar[Literal["epoch_finished"]] = "epoch_finished"
    epoch: int
    total: int


@dataclass(frozen=True, slots=True)
class Validation:
    """sd-scripts' validation pass at the end of an epoch: the mean loss on the held-out images.

    sd-scripts uses the same noise and the same four timesteps every epoch (seeded by `validation_seed`),
    so the losses of different epochs compare; the bar prints them with 3 significant digits.
    """

    KIND: ClassVar[Literal["validation"]] = "validation"
    epoch: int
    step: int | None  # the global step the LoRA had reached (None when no step was seen)
    loss: float


@dataclass(frozen=True, slots=True)
class CheckpointSaved:
    """A LoRA file was written; the final `<name>.safetensors` counts as the last epoch's."""

    KIND: ClassVar[Literal["checkpoint_saved"]] = "checkpoint_saved"
    path: str
    epoch: int | None
    step: int | None
    final: bool


@dataclass(frozen=True, slots=True)
class SampleSaved:
    """A sample image was written (None for `path`: the log does not name the file).

    sd-scripts names it `sample/<name>_e<epoch:06d>_<index:02d>_<time>[_<seed>].png` when sampling
    by epoch, `sample/<name>_<step:06d>_<index:02d>_…` when sampling by step.
    """

    KIND: ClassVar[Literal["sample_saved"]] = "sample_saved"
    path: str | None
    epoch: int | None
    step: int
    index: int  # the prompt's position in the prompt file


@dataclass(frozen=True, slots=True)
class StateSaved:
    """A training-state folder (for resuming) was written."""

    KIND: ClassVar[Literal["state_saved"]] = "state_saved"
    path: str | None
    epoch: int | None
    step: int | None


@dataclass(frozen=True, slots=True)
class Warning:  # shadows builtins.Warning on purpose: it is the event's name in the schema
    """sd-scripts logged something the user should see."""

    KIND: ClassVar[Literal["warning"]] = "warning"
    message: str


@dataclass(frozen=True, slots=True)
class Error:
    """The run failed, or is doomed (NaN loss), for this reason; `hint` says what to change."""

    KIND: ClassVar[Literal["error"]] = "error"
    kind: ErrorKind
    message: str
    hint: str


@dataclass(frozen=True, slots=True)
class RunFinished:
    """The child exited; `reason` is "completed", "interrupted" or the first Error's kind."""

    KIND: ClassVar[Literal["run_finished"]] = "run_finished"
    exit_code: int | None
    success: bool
    reason: str


Event: TypeAlias = (
    RunStarted
    | Phase
    | Step
    | EpochStarted
    | EpochFinished
    | Validation
    | CheckpointSaved
    | SampleSaved
    | StateSaved
    | Warning
    | Error
    | RunFinished
)

_CLASSES: Final[dict[str, type[Event]]] = {
    cls.KIND: cls
    for cls in (
        RunStarted,
        Phase,
        Step,
        EpochStarted,
        EpochFinished,
        Validation,
        CheckpointSaved,
        SampleSaved,
        StateSaved,
        Warning,
        Error,
        RunFinished,
    )
}
# The schema version that introduced each kind (the others date from version 1).
_SINCE: Final[dict[str, int]] = {Validation.KIND: 2}
# "kind" is the line's discriminator, so Error's own `kind` field travels under another key.
_JSON_KEYS: Final = {"kind": "error_kind"}
# Strict JSON has no NaN or infinity, and a diverged loss is exactly NaN: such floats travel as strings.
_NON_FINITE: Final = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _float_fields(cls: type[Event]) -> frozenset[str]:
    hints = typing.get_type_hints(cls)
    return frozenset(f.name for f in fields(cls) if hints[f.name] is float or float in typing.get_args(hints[f.name]))


_FLOAT_FIELDS: Final = {kind: _float_fields(cls) for kind, cls in _CLASSES.items()}


def _encode(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def to_json(event: Event, t: float | None = None) -> str:
    """One JSON line (no newline) for `event`, with the schema version and, if given, wall-clock time `t`."""
    record: dict[str, object] = {"v": SCHEMA_VERSION, "kind": event.KIND}
    if t is not None:
        record["t"] = t
    for f in fields(event):
        record[_JSON_KEYS.get(f.name, f.name)] = _encode(getattr(event, f.name))
    return json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def from_json_timed(line: str) -> tuple[Event, float | None]:
    """The event in one JSON line written by `to_json`, and its time (None if it had none)."""
    record = json.loads(line)
    version = record.get("v") if isinstance(record, dict) else None
    if not isinstance(record, dict) or type(version) is not int or version not in READABLE_VERSIONS:
        raise ValueError(f"not a version-{SCHEMA_VERSION} event line: {line[:80]!r}")
    kind = record.get("kind")
    cls = _CLASSES.get(kind) if isinstance(kind, str) else None
    if cls is None or version < _SINCE.get(cls.KIND, 1):
        raise ValueError(f"unknown event kind {kind!r} in: {line[:80]!r}")
    values: dict[str, Any] = {}
    for f in fields(cls):
        key = _JSON_KEYS.get(f.name, f.name)
        if key not in record:
            raise ValueError(f"{cls.KIND} event without {key!r}: {line[:80]!r}")
        value = record[key]
        if f.name in _FLOAT_FIELDS[cls.KIND] and isinstance(value, str):
            if value not in _NON_FINITE:
                raise ValueError(f"{cls.KIND} event with {key} = {value!r}: {line[:80]!r}")
            value = _NON_FINITE[value]
        values[f.name] = value
    t = record.get("t")
    return cls(**values), None if t is None else float(t)


def from_json(line: str) -> Event:
    """The event in one JSON line written by `to_json` (raises ValueError for anything else)."""
    return from_json_timed(line)[0]
