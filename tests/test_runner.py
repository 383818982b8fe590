"""The runner against a fake sd-scripts that replays real logs: run folder, events, status, signals, resume."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import fake_sd
import pytest

from kohya_wrap.config.presets import load_config
from kohya_wrap.data.dataset import plan_steps, scan
from kohya_wrap.errors import TrainingFailed, TrainingInterrupted
from kohya_wrap.progress import PlainView
from kohya_wrap.train import events as ev
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.train.runner import execute, find_resume_point
from kohya_wrap.train.runs import create_run, read_record

HERE = Path(__file__).parent
LOGS = HERE / "fixtures" / "logs"
SIMPLE = os.pathsep.join(str(LOGS / f"sd15_accelerate_console_log_simple.{s}.txt") for s in ("stdout", "stderr"))


def failure(name: str) -> str:
    return os.pathsep.join(str(LOGS / "failures" / f"{name}.{s}.txt") for s in ("stdout", "stderr"))


@pytest.fixture
def fake_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A config whose `run.python` is the replaying fake and whose sd-scripts dir has the script names."""
    sd, wrapper = fake_sd.install(tmp_path)
    images = fake_sd.captioned_images(tmp_path / "data" / "1_e2etok", "e2etok, red")
    (tmp_path / "model").mkdir()
    config = tmp_path / "lora.toml"
    config.write_text(
        f"""
[model]
family = "sd15"
base = "{tmp_path / "model"}"
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
mixed_precision = "no"
[save]
output_name = "e2e_lora"
[run]
runs_dir = "{tmp_path / "runs"}"
sd_scripts_dir = "{sd}"
python = "{wrapper}"
"""
    )
    monkeypatch.setenv("FAKE_SD_ARGV", str(tmp_path / "argv.jsonl"))

    def start(log: str, exit_code: int = 0, hang: bool = False) -> tuple[RunLayout, PlainView, io.StringIO]:
        monkeypatch.setenv("FAKE_SD_LOG", log)
        monkeypatch.setenv("FAKE_SD_EXIT", str(exit_code))
        monkeypatch.setenv("FAKE_SD_HANG", "1" if hang else "0")
        loaded = load_config(config)
        plan = plan_steps(loaded.config, scan(loaded.config))
        out = io.StringIO()
        return create_run(loaded, plan), PlainView(out), out

    return start


def read_events(layout: RunLayout) -> list[ev.Event]:
    return [ev.from_json(line) for line in layout.events.read_text("utf-8").splitlines()]


def test_success_writes_the_run_folder(fake_run) -> None:  # type: ignore[no-untyped-def]
    layout, view, out = fake_run(SIMPLE)
    record = execute(layout, view)
    assert record.status == "finished" and record.exit_code == 0
    assert record.attempts == 1 and record.versions["python"]
    saved = sorted(p.name for p in layout.output_dir.glob("*.safetensors"))
    assert saved == ["e2e_lora-000001.safetensors", "e2e_lora.safetensors"]
    events = read_events(layout)
    started = [e for e in events if isinstance(e, ev.RunStarted)]
    assert len(started) == 1 and started[0].total_steps == 8 and started[0].epochs == 2
    checkpoints = [e for e in events if isinstance(e, ev.CheckpointSaved)]
    assert [(Path(e.path).name, e.epoch) for e in checkpoints] == [
        ("e2e_lora-000001.safetensors", 1),
        ("e2e_lora.safetensors", 2),
    ]
    steps = [e for e in events if isinstance(e, ev.Step)]
    assert steps[-1].step == 8 and steps[-1].total == 8
    assert isinstance(events[-1], ev.RunFinished) and events[-1].success
    assert layout.log.read_text("utf-8").count("saving checkpoint:") == 2
    command = layout.command.read_text("utf-8")
    assert "accelerate.commands.launch" in command and str(layout.train_toml) in command
    assert "saved LoRA (epoch 1)" in out.getvalue()


@pytest.mark.parametrize(
    ("fixture", "exit_code", "kind"),
    [
        ("missing_model", 1, "missing_file"),
        ("no_data", 0, "no_data"),
        ("constant_warmup", 1, "config"),
        ("dadapt_missing", 1, "import"),
    ],
)
def test_failures_are_failed_runs(fake_run, fixture: str, exit_code: int, kind: str) -> None:  # type: ignore[no-untyped-def]
    layout, view, _ = fake_run(failure(fixture), exit_code)
    with pytest.raises(TrainingFailed) as caught:
        execute(layout, view)
    record = read_record(layout)
    assert record.status == "failed" and record.exit_code == exit_code
    assert caught.value.exit_code == 1
    assert caught.value.lines[1].startswith("fix: ")
    errors = [e for e in read_events(layout) if isinstance(e, ev.Error)]
    assert errors[0].kind == kind
    # The relevant lines, not a 200-line dump.
    assert len(caught.value.lines) <= 3 + 12


def test_nan_loss_stops_the_run(fake_run) -> None:  # type: ignore[no-untyped-def]
    layout, view, _ = fake_run(failure("nan_loss"))
    with pytest.raises(TrainingFailed) as caught:
        execute(layout, view)
    assert "nan" in caught.value.lines[0].lower()
    record = read_record(layout)
    assert record.status == "failed"
    assert any(isinstance(e, ev.Error) and e.kind == "nan" for e in read_events(layout))


def _interrupt_when(path_glob: tuple[Path, str]) -> threading.Thread:
    folder, pattern = path_glob

    def wait_and_signal() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not list(folder.glob(pattern)):
            time.sleep(0.02)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=wait_and_signal, daemon=True)
    thread.start()
    return thread


def test_ctrl_c_interrupts_then_resume_finishes(fake_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    layout, view, _ = fake_run(SIMPLE, hang=True)
    _interrupt_when((layout.output_dir, "*-state/train_state.json"))
    with pytest.raises(TrainingInterrupted) as caught:
        execute(layout, view)
    assert caught.value.exit_code == 130
    record = read_record(layout)
    assert record.status == "interrupted"
    assert (layout.output_dir / "e2e_lora-000001.safetensors").exists()
    point = find_resume_point(layout, "e2e_lora")
    assert (point.state_dir.name, point.epoch, point.step) == ("e2e_lora-000001-state", 1, 4)

    os.environ["FAKE_SD_HANG"] = "0"
    record = execute(layout, PlainView(io.StringIO()), resume=True)
    assert record.status == "finished" and record.attempts == 2
    assert record.resumed_from == str(point.state_dir)
    argv = [json.loads(line) for line in (tmp_path / "argv.jsonl").read_text().splitlines()]
    assert "--resume" not in argv[0] and argv[1][argv[1].index("--resume") + 1] == str(point.state_dir)
    finished = [e for e in read_events(layout) if isinstance(e, ev.RunFinished)]
    assert [f.reason for f in finished] == ["interrupted", "completed"]


def test_ctrl_c_reaches_the_child_even_when_started_with_sigint_ignored(fake_run) -> None:  # type: ignore[no-untyped-def]
    # Scripts that start us in the background (`nohup … &`) hand down SIGINT ignored; the child
    # must still get its KeyboardInterrupt instead of training on until the SIGTERM fallback.
    layout, view, _ = fake_run(SIMPLE, hang=True)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _interrupt_when((layout.output_dir, "*-state/train_state.json"))
        started = time.monotonic()
        with pytest.raises(TrainingInterrupted):
            execute(layout, view)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - started < 10
    assert "KeyboardInterrupt" in layout.log.read_text("utf-8")


def test_resume_after_a_late_interrupt_marks_the_run_finished(fake_run) -> None:  # type: ignore[no-untyped-def]
    layout, view, _ = fake_run(SIMPLE)
    execute(layout, view)
    # A Ctrl-C that landed while sd-scripts wrote its last files: the run was recorded as interrupted.
    record = json.loads(layout.run_json.read_text())
    layout.run_json.write_text(json.dumps({**record, "status": "interrupted"}))
    out = io.StringIO()
    resumed = execute(layout, PlainView(out), resume=True)
    assert resumed.status == "finished" and resumed.reason == "completed before the interrupt took effect"
    assert "nothing to resume: all 2 epochs were trained and e2e_lora.safetensors was saved" in out.getvalue()
