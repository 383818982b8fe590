"""A synthetic run folder as kohya_wrap leaves it (events, samples, LoRA files), for the review tests."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from kohya_wrap.review.report import CELL, PAD
from kohya_wrap.train import events as ev
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.train.runs import RunRecord, Status

PROMPTS = ("zdm, 1boy, a red square", "zdm, 1boy, a blue circle on a very long prompt " + "with words " * 12)
START = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
STEP_SECONDS, SAMPLE_SECONDS, STARTUP_SECONDS = 2.0, 3.0, 22.0


def colour(epoch: int, prompt: int) -> tuple[int, int, int]:
    return (40 * epoch % 256, 90 + 80 * prompt, 200)


def timeline(
    epochs: int,
    steps_per_epoch: int,
    prompts: int,
    stop_after_step: int | None = None,
    error: ev.Error | None = None,
) -> list[tuple[ev.Event, float]]:
    """Events as a real run emits them, with times: start-up, steps, a checkpoint and samples per epoch."""
    t = START.timestamp() + 5.0  # the child's imports before its first event
    out: list[tuple[ev.Event, float]] = []

    def emit(event: ev.Event, seconds: float = 0.0) -> None:
        nonlocal t
        out.append((event, t))
        t += seconds

    emit(ev.Phase("loading_model", "model"), 15.0)
    emit(ev.Phase("caching_latents", ""), 2.0)
    total = epochs * steps_per_epoch
    emit(ev.RunStarted("train_network.py", total, epochs, steps_per_epoch, 4))
    step = 0
    for epoch in range(1, epochs + 1):
        emit(ev.EpochStarted(epoch, epochs), STEP_SECONDS)
        for _ in range(steps_per_epoch):
            step += 1
            loss = 1.0 / step
            emit(ev.Step(step, total, None if step == 1 else 1.0 / (step - 1), 0.5, 1.0, step * STEP_SECONDS))
            emit(
                ev.Step(step, total, loss, 0.5, 1.0, step * STEP_SECONDS),
                STEP_SECONDS if step % steps_per_epoch else 0,
            )
            if step == stop_after_step:
                if error is not None:
                    emit(error)
                emit(ev.RunFinished(1 if error else 130, False, error.kind if error else "interrupted"))
                return out
        emit(ev.CheckpointSaved(f"zdm-{epoch:06d}.safetensors", epoch, step, epoch == epochs), 1.0)
        emit(ev.Phase("sampling", f"step {step}"), SAMPLE_SECONDS)
        for index in range(prompts):
            emit(ev.SampleSaved(None, epoch, step, index), SAMPLE_SECONDS if index + 1 < prompts else 0.0)
        emit(ev.EpochFinished(epoch, epochs))
    emit(ev.RunFinished(0, True, "completed"))
    return out


def write_run(
    root: Path,
    status: Status = "finished",
    epochs: int = 3,
    steps_per_epoch: int = 4,
    sample_epochs: Sequence[int] = (1, 2, 3),
    missing: Sequence[tuple[int, int]] = (),
    events: list[tuple[ev.Event, float]] | None = None,
    loras: Sequence[int] | None = None,
) -> RunLayout:
    """A run folder as kohya_wrap leaves it, with small coloured PNGs as samples."""
    layout = RunLayout(root)
    layout.samples_dir.mkdir(parents=True)
    timed = events if events is not None else timeline(epochs, steps_per_epoch, len(PROMPTS))
    ended = dt.datetime.fromtimestamp(timed[-1][1] + 1, dt.UTC) if timed else None
    record = RunRecord(
        status=status,
        name="zdm",
        family="sd15",
        script="train_network.py",
        config_hash="0123456789abcdef",
        total_steps=epochs * steps_per_epoch,
        epochs=epochs,
        created=START.isoformat(),
        started=START.isoformat(),
        ended=ended.isoformat() if ended and status != "running" else None,
        exit_code={"finished": 0, "failed": 1, "interrupted": 130}.get(status),
        attempts=1,
    )
    layout.run_json.write_text(record.to_json(), encoding="utf-8")
    layout.config.write_text(
        '[model]\nfamily = "sd15"\nbase = "model.safetensors"\n[dataset]\nresolution = 512\n'
        '[training]\nbatch_size = 2\nmixed_precision = "fp16"\ngradient_checkpointing = false\n'
        '[save]\noutput_name = "zdm"\n',
        encoding="utf-8",
    )
    entries = [
        {"prompt": p, "width": 64, "height": 48, "sample_steps": 20, "seed": 1 + i, "scale": 7.0}
        for i, p in enumerate(PROMPTS)
    ]
    layout.prompts.write_text(json.dumps(entries), encoding="utf-8")
    for epoch in sample_epochs:
        for index in range(len(PROMPTS)):
            if (epoch, index) in missing:
                continue
            name = f"zdm_e{epoch:06d}_{index:02d}_2026010112{epoch:02d}00_{index + 1}.png"
            Image.new("RGB", (64, 48), colour(epoch, index)).save(layout.samples_dir / name)
    for epoch in loras if loras is not None else range(1, epochs + 1):
        name = "zdm.safetensors" if epoch == epochs and status == "finished" else f"zdm-{epoch:06d}.safetensors"
        (layout.output_dir / name).write_bytes(b"\0" * 1024 * epoch)
    layout.events.write_text("".join(ev.to_json(e, t) + "\n" for e, t in timed), encoding="utf-8")
    return layout


def pixel(image: Image.Image, row: int, column: int, header: int, label: int) -> tuple[int, int, int]:
    """The colour at the centre of a grid cell."""
    x = label + column * (CELL + PAD) + CELL // 2
    y = header + row * (CELL + PAD) + CELL // 2
    value = image.getpixel((x, y))
    assert isinstance(value, tuple)
    return value[0], value[1], value[2]


def grid_geometry(image: Image.Image, rows: int, columns: int) -> tuple[int, int]:
    """(header height, label width), from the sheet size and the documented layout."""
    label = image.width - columns * (CELL + PAD)
    header = image.height - rows * (CELL + PAD)
    return header, label
