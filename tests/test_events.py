"""Events and their JSON lines: exact form, round trips, strict JSON, and rejected lines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from kohya_wrap.train.events import (
    SCHEMA_VERSION,
    CheckpointSaved,
    EpochFinished,
    EpochStarted,
    Error,
    Event,
    Phase,
    RunFinished,
    RunStarted,
    SampleSaved,
    StateSaved,
    Step,
    Validation,
    Warning,
    from_json,
    from_json_timed,
    to_json,
)
from kohya_wrap.train.logparse import LogParser

LOGS = Path(__file__).parent / "fixtures" / "logs"

ONE_OF_EACH: list[Event] = [
    RunStarted(script="train_network.py", total_steps=8, epochs=2, batches_per_epoch=4, images=4),
    RunStarted(script=None, total_steps=None, epochs=None, batches_per_epoch=None, images=None),
    Phase(name="loading_model", detail="/models/base.safetensors"),
    Step(step=3, total=8, loss=1.15, rate=0.8130081300813008, eta_s=6.0, elapsed_s=3.0),
    Step(step=1, total=8, loss=None, rate=None, eta_s=None, elapsed_s=0.0),
    EpochStarted(epoch=1, total=2),
    EpochFinished(epoch=1, total=2),
    Validation(epoch=1, step=4, loss=1.05),
    Validation(epoch=3, step=None, loss=0.0912),
    CheckpointSaved(path="/out/e2e_lora-000001.safetensors", epoch=1, step=4, final=False),
    CheckpointSaved(path="/out/e2e_lora.safetensors", epoch=2, step=8, final=True),
    SampleSaved(path=None, epoch=1, step=4, index=0),
    StateSaved(path="/out/e2e_lora-000001-state", epoch=1, step=4),
    Warning(message="ignore subset with image_dir='/data/empty': no images found / 画像が見つからない"),
    Error(kind="config", message="ValueError: bad\nsecond line", hint="Change it."),
    RunFinished(exit_code=None, success=False, reason="unknown"),
]


def strict_json(line: str) -> dict[str, object]:
    def reject(constant: str) -> object:
        raise ValueError(f"not strict JSON: {constant}")

    record = json.loads(line, parse_constant=reject)
    assert isinstance(record, dict)
    return record


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda event: type(event).__name__)
def test_round_trip(event: Event) -> None:
    line = to_json(event)
    assert "\n" not in line
    assert from_json(line) == event
    assert from_json_timed(to_json(event, t=1764000000.25)) == (event, 1764000000.25)
    assert from_json_timed(line) == (event, None)


def test_exact_lines() -> None:
    assert to_json(Step(step=2, total=8, loss=1.14, rate=0.75, eta_s=8.0, elapsed_s=2.0), t=12.5) == (
        '{"v":2,"kind":"step","t":12.5,"step":2,"total":8,"loss":1.14,"rate":0.75,"eta_s":8.0,"elapsed_s":2.0}'
    )
    assert to_json(Warning(message="画像")) == '{"v":2,"kind":"warning","message":"画像"}'
    # "kind" names the event, so the error's own kind has another key.
    assert to_json(Error(kind="oom", message="m", hint="h")) == (
        '{"v":2,"kind":"error","error_kind":"oom","message":"m","hint":"h"}'
    )
    assert to_json(Validation(epoch=2, step=8, loss=1.05)) == (
        '{"v":2,"kind":"validation","epoch":2,"step":8,"loss":1.05}'
    )
    assert SCHEMA_VERSION == 2


def test_version_1_lines_still_read() -> None:
    # Run folders written before the validation event keep their events.
    line = '{"v":1,"kind":"epoch_started","t":3.5,"epoch":1,"total":2}'
    assert from_json_timed(line) == (EpochStarted(epoch=1, total=2), 3.5)


def test_every_event_kind_has_a_name() -> None:
    kinds = {type(event).KIND for event in ONE_OF_EACH}
    assert kinds == {
        "run_started",
        "phase",
        "step",
        "epoch_started",
        "epoch_finished",
        "validation",
        "checkpoint_saved",
        "sample_saved",
        "state_saved",
        "warning",
        "error",
        "run_finished",
    }


@pytest.mark.parametrize(("value", "text"), [(math.nan, '"NaN"'), (math.inf, '"Infinity"'), (-math.inf, '"-Infinity"')])
def test_non_finite_floats_stay_strict_json(value: float, text: str) -> None:
    line = to_json(Step(step=2, total=12, loss=value, rate=1.44, eta_s=6.0, elapsed_s=1.0))
    assert f'"loss":{text}' in line
    strict_json(line)
    event = from_json(line)
    assert isinstance(event, Step) and event.loss is not None
    assert math.isnan(event.loss) if math.isnan(value) else event.loss == value
    line = to_json(Validation(epoch=1, step=4, loss=value))
    strict_json(line)
    validation = from_json(line)
    assert isinstance(validation, Validation)
    assert math.isnan(validation.loss) if math.isnan(value) else validation.loss == value


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"v":3,"kind":"warning","message":"x"}', "not a version-2 event line"),
        ('{"v":true,"kind":"warning","message":"x"}', "not a version-2 event line"),
        ('["v",1]', "not a version-2 event line"),
        ('{"v":1,"kind":"validation","epoch":1,"step":4,"loss":1.0}', "unknown event kind 'validation'"),
        ('{"v":1,"kind":"note","message":"x"}', "unknown event kind 'note'"),
        ('{"v":1,"message":"x"}', "unknown event kind None"),
        ('{"v":1,"kind":"epoch_started","epoch":1}', "epoch_started event without 'total'"),
        ('{"v":1,"kind":"error","message":"m","hint":"h"}', "error event without 'error_kind'"),
        (
            '{"v":1,"kind":"step","step":1,"total":2,"loss":"lots","rate":null,"eta_s":null,"elapsed_s":0}',
            "step event with loss = 'lots'",
        ),
    ],
)
def test_bad_lines_are_refused(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_json(line)


def read(path: Path) -> str:
    with path.open(encoding="utf-8", newline="") as file:
        return file.read()


@pytest.mark.parametrize(
    "log",
    [
        *sorted(LOGS.rglob("*.stderr.txt")),
        *sorted(LOGS.glob("*.merged.txt")),
        LOGS / "sd15_accelerate_tty.typescript.txt",
    ],
    ids=lambda p: p.name,
)
def test_every_parsed_event_survives_a_round_trip(log: Path) -> None:
    parser = LogParser(script="train_network.py")
    events = parser.feed(read(log)) + parser.finish(1)
    lines = [to_json(event, t=float(i)) for i, event in enumerate(events)]
    for line in lines:
        strict_json(line)
    assert [to_json(*from_json_timed(line)) for line in lines] == lines
