"""The three views of a run: rich bar, plain lines, JSON lines."""

from __future__ import annotations

import io
import json

from rich.console import Console

from kohya_wrap.progress import JsonView, PlainView, RichView, describe, fmt_rate, fmt_seconds, make_view
from kohya_wrap.train import events as ev

RUN = [
    ev.Phase(name="loading_model", detail=""),
    ev.RunStarted(script="train_network.py", total_steps=20, epochs=2, batches_per_epoch=10, images=10),
    ev.EpochStarted(epoch=1, total=2),
    *[ev.Step(step=i, total=20, loss=0.1, rate=2.0, eta_s=(20 - i) / 2, elapsed_s=i / 2) for i in range(1, 11)],
    ev.CheckpointSaved(path="/r/output/zdm-000001.safetensors", epoch=1, step=10, final=False),
    ev.SampleSaved(path="/r/output/sample/zdm_e000001_00_20260101000000_42.png", epoch=1, step=10, index=0),
    ev.EpochStarted(epoch=2, total=2),
    *[ev.Step(step=i, total=20, loss=0.09, rate=0.5, eta_s=(20 - i) * 2, elapsed_s=i) for i in range(11, 21)],
    ev.CheckpointSaved(path="/r/output/zdm.safetensors", epoch=2, step=20, final=True),
    ev.RunFinished(exit_code=0, success=True, reason="completed"),
]


def test_formatting() -> None:
    assert fmt_seconds(None) == "--:--"
    assert fmt_seconds(75) == "01:15"
    assert fmt_seconds(3 * 3600 + 62) == "3:01:02"
    assert fmt_rate(2.0) == "2.00 it/s"
    assert fmt_rate(0.25) == "4.00 s/it"
    assert fmt_rate(None) == ""


def test_describe_lines() -> None:
    assert describe(RUN[1]) == "training: 20 steps, 2 epochs, 10 batches per epoch, 10 images with repeats"
    assert describe(RUN[13]) == "saved LoRA (epoch 1): /r/output/zdm-000001.safetensors"
    assert describe(ev.Error(kind="oom", message="CUDA out of memory", hint="lower the batch")) == (
        "error (oom): CUDA out of memory\n  fix: lower the batch"
    )
    assert describe(RUN[3]) is None
    assert describe(ev.Validation(epoch=3, step=30, loss=0.09124)) == "validation loss (epoch 3): 0.0912"
    assert describe(ev.Phase(name="validating", detail="epoch 3")) == "validating on the held-out images: epoch 3"


def test_plain_view_prints_events_and_throttles_steps() -> None:
    out = io.StringIO()
    view = PlainView(out)
    for event in RUN:
        view.event(event)
    view.raw("raw child output\n")
    lines = out.getvalue().splitlines()
    assert lines[0] == "loading the base model"
    assert "epoch 1/2" in lines and "epoch 2/2" in lines
    steps = [line for line in lines if line.startswith("step ")]
    # every 10 % of the run, and the last step
    assert steps[0] == "step 1/20 loss 0.1 2.00 it/s ETA 00:09"
    assert steps[-1] == "step 20/20 loss 0.09 2.00 s/it ETA 00:00"
    assert [int(line.split()[1].split("/")[0]) for line in steps] == [1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    assert "saved LoRA (epoch 2, final): /r/output/zdm.safetensors" in lines
    assert lines[-1] == "finished: completed"
    assert "raw child output" not in out.getvalue()


def test_plain_view_verbose_shows_raw_output() -> None:
    out = io.StringIO()
    PlainView(out, verbose=True).raw("steps:  50%|█████     | 1/2\r")
    assert out.getvalue() == "steps:  50%|█████     | 1/2\r"


def test_json_view_streams_every_event() -> None:
    out = io.StringIO()
    view = JsonView(out)
    for event in RUN:
        view.event(event)
    view.note("report: /r/report/index.html")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["kind"] for r in records[:-1]] == [e.KIND for e in RUN]
    assert [ev.from_json(line) for line in out.getvalue().splitlines()[:-1]] == RUN
    assert records[-1] == {"kind": "note", "message": "report: /r/report/index.html"}


def test_rich_view_bar_and_lines_above_it() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    view = RichView(console)
    for event in RUN:
        view.event(event)
    task = view.progress.tasks[0]
    assert (task.completed, task.total) == (20, 20)
    assert task.fields["epoch"] == "epoch 2/2"
    assert task.fields["loss"] == "0.09"
    view.close()
    text = out.getvalue()
    assert "saved LoRA (epoch 1): /r/output/zdm-000001.safetensors" in text
    assert "20/20" in text


def test_make_view_picks_by_stream() -> None:
    assert isinstance(make_view(out=io.StringIO()), PlainView)
    assert isinstance(make_view(json_lines=True, out=io.StringIO()), JsonView)


def test_rich_view_shows_the_phase_without_a_count_until_steps_are_known() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    view = RichView(console)
    view.event(ev.Phase(name="caching_latents", detail=""))
    waiting = view.progress.tasks[0]
    columns = [str(column.render(waiting)) for column in view.progress.columns]
    assert "caching latents" in columns
    assert not any("None" in text or "0/" in text or "loss" in text or "ETA" in text for text in columns)
    assert columns[0].strip() != ""  # the spinner
    view.event(RUN[1])
    counting = [str(column.render(view.progress.tasks[0])) for column in view.progress.columns]
    assert "0/20" in counting and "loss -" in counting and counting[0] == ""
    view.close()
    assert "None" not in out.getvalue()
