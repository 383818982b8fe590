"""Tests for kohya_wrap.review.report: sample grid, loss series and curve, index.html, on synthetic and real runs."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from browser import loaded_images
from click.testing import CliRunner
from PIL import Image
from real_run import RealRuns, real_runs
from synthetic_run import (
    PROMPTS,
    SAMPLE_SECONDS,
    START,
    STARTUP_SECONDS,
    STEP_SECONDS,
    colour,
    grid_geometry,
    pixel,
    timeline,
    write_run,
)

from kohya_wrap.cli import main
from kohya_wrap.review.estimate import run_timings
from kohya_wrap.review.report import (
    LossSeries,
    loss_series,
    render_sample_grid,
    sample_grid,
    tensorboard_argv,
    write_report,
)
from kohya_wrap.train import events as ev
from kohya_wrap.train.layout import RunLayout


@pytest.fixture
def run(tmp_path: Path) -> RunLayout:
    return write_run(tmp_path / "zdm-20260101-120000")


# ---- sample grid ----------------------------------------------------------------------------------


def test_grid_has_a_row_per_epoch_and_a_column_per_prompt(run: RunLayout) -> None:
    # A resumed epoch renders its samples again; the newest one counts.
    Image.new("RGB", (64, 48), (1, 2, 3)).save(run.samples_dir / "zdm_e000002_00_20260101110000_1.png")
    grid = sample_grid(run, "zdm")
    assert grid.epochs == (1, 2, 3)
    assert grid.prompts == PROMPTS
    assert grid.cells[(2, 0)].name == "zdm_e000002_00_20260101120200_1.png"
    image = render_sample_grid(grid)
    header, label = grid_geometry(image, 3, 2)
    assert header > 3 * 14 and label > 40  # room for the wrapped prompt and "epoch 3"
    for row, epoch in enumerate(grid.epochs):
        for column in range(2):
            assert pixel(image, row, column, header, label) == colour(epoch, column)


def test_grid_shows_what_an_interrupted_run_made(tmp_path: Path) -> None:
    events = timeline(3, 4, 2, stop_after_step=6)
    layout = write_run(
        tmp_path / "run", "interrupted", sample_epochs=(1, 2), missing=[(2, 1)], events=events, loras=[1]
    )
    (layout.samples_dir / "zdm_e000002_01_20260101120300_2.png").write_bytes(b"\x89PNG cut short")
    index = write_report(layout)
    grid = sample_grid(layout, "zdm")
    assert grid.epochs == (1, 2)
    image = Image.open(layout.report_dir / "grid.png")
    header, label = grid_geometry(image, 2, 2)
    assert pixel(image, 1, 0, header, label) == colour(2, 0)
    assert pixel(image, 1, 1, header, label) == (0xEE, 0xEE, 0xEE)  # the unreadable sample: a grey box
    page = index.read_text("utf-8")
    assert "interrupted" in page and f"kohya-wrap train --resume {layout.root}" in page
    assert "zdm-000001.safetensors" in page and "zdm.safetensors" not in page


def test_prompts_beyond_prompts_json_get_a_column(run: RunLayout) -> None:
    run.prompts.unlink()
    grid = sample_grid(run, "zdm")
    assert grid.prompts == ("", "")


# ---- loss -----------------------------------------------------------------------------------------


def test_loss_from_events_takes_the_last_redraw_of_each_step(run: RunLayout) -> None:
    series = loss_series(run)
    assert series.source == "events"
    assert series.per_step == ()
    assert series.average == tuple((s, 1.0 / s) for s in range(1, 13))
    assert series.steps == 12
    # The bar's average at an epoch's last step is that epoch's mean.
    assert series.per_epoch == ((1, 1 / 4), (2, 1 / 8), (3, 1 / 12))
    assert series.steps_per_epoch == 4


def write_scalars(folder: Path, scalars: dict[str, Sequence[tuple[int, float]]]) -> None:
    """A TensorBoard event file, as sd-scripts' accelerate tracker writes it."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(folder))
    for tag, points in scalars.items():
        for step, value in points:
            summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
            writer.add_event(event_pb2.Event(step=step, wall_time=1.0, summary=summary))
    writer.close()


def test_loss_from_tensorboard_joins_a_resumed_run(run: RunLayout) -> None:
    pytest.importorskip("tensorboard")
    first = run.logging_dir / "20260101120000" / "network_train"
    # Interrupted in epoch 2 after step 6; resumed from the epoch-1 state, so counting starts again at 1.
    write_scalars(
        first,
        {
            "loss/current": [(s, 0.1 * s) for s in range(1, 7)],
            "loss/average": [(s, 0.05 * s) for s in range(1, 7)],
            "loss/epoch_average": [(1, 0.25)],
        },
    )
    second = run.logging_dir / "20260101130000" / "network_train"
    write_scalars(
        second,
        {
            "loss/current": [(s, 1.0 + s) for s in range(1, 9)],
            "loss/average": [(s, 2.0 + s) for s in range(1, 9)],
            "loss/epoch_average": [(2, 0.5), (3, 0.75)],
        },
    )
    series = loss_series(run)
    assert series.source == "tensorboard"
    assert series.per_step == (
        *((s, pytest.approx(0.1 * s)) for s in range(1, 5)),
        *((s + 4, pytest.approx(1.0 + s)) for s in range(1, 9)),
    )
    assert series.steps == 12
    assert series.per_epoch == ((1, 0.25), (2, 0.5), (3, 0.75))


def test_nan_loss_is_called_out(tmp_path: Path) -> None:
    error = ev.Error("nan", "the loss became NaN at step 6", "use bf16 or a lower learning rate")
    events = timeline(3, 4, 2, stop_after_step=6, error=error)
    events[-3] = (ev.Step(6, 12, float("nan"), 0.5, 1.0, 12.0), events[-3][1])
    layout = write_run(tmp_path / "run", "failed", sample_epochs=(1,), events=events, loras=[1])
    page = write_report(layout).read_text("utf-8")
    assert "The loss became NaN at step 6" in page
    assert "<b>nan</b>: the loss became NaN at step 6<br>Fix: use bf16 or a lower learning rate" in page


def with_validation(timed: list[tuple[ev.Event, float]], losses: dict[int, float]) -> list[tuple[ev.Event, float]]:
    """`timed` with a validation pass before each listed epoch's checkpoint, as sd-scripts runs it."""
    out: list[tuple[ev.Event, float]] = []
    for event, t in timed:
        if isinstance(event, ev.CheckpointSaved) and event.epoch in losses:
            out.append((ev.Validation(event.epoch, event.step, losses[event.epoch]), t))
        out.append((event, t))
    return out


def colours_in(png: Path) -> set[tuple[int, int, int]]:
    with Image.open(png) as image:
        found = image.convert("RGB").getcolors(maxcolors=2**24) or []
    return {colour for _, colour in found}


def test_validation_loss_joins_the_loss_plot_and_suggests_an_epoch(tmp_path: Path) -> None:
    events = with_validation(timeline(3, 4, 2), {1: 0.31, 2: 0.27, 3: 0.29})
    layout = write_run(tmp_path / "run", events=events)
    series = loss_series(layout)
    assert [(v.epoch, v.loss) for v in series.validation] == [(1, 0.31), (2, 0.27), (3, 0.29)]
    assert series.validation_points == ((1, 4, 0.31), (2, 8, 0.27), (3, 12, 0.29))
    page = write_report(layout).read_text("utf-8")
    assert (
        '<p><b>Suggested epoch: 2</b> (<a href="../output/zdm-000002.safetensors">../output/zdm-000002.safetensors'
        "</a>): epoch 2 has the lowest validation loss (0.27) of the 3 saved epochs validated.</p>"
    ) in page
    assert "the samples above have the last word" in page
    assert "<th>validation loss</th>" in page
    assert "<td class='num'>0.27 ★ suggested</td>" in page and "<td class='num'>0.31</td>" in page
    # Validation (green squares) and the suggested epoch (a gold star) are drawn beside the training loss.
    assert {(0x2A, 0x8A, 0x3E), (0xE0, 0xA4, 0x00)} <= colours_in(layout.report_dir / "loss.png")


def test_without_validation_the_report_suggests_nothing(run: RunLayout) -> None:
    page = write_report(run).read_text("utf-8")
    assert "uggested" not in page and "validation" not in page
    assert (0x2A, 0x8A, 0x3E) not in colours_in(run.report_dir / "loss.png")


def test_validation_of_unsaved_epochs_only_suggests_nothing(tmp_path: Path) -> None:
    events = with_validation(timeline(3, 4, 2), {1: 0.31})
    layout = write_run(tmp_path / "run", events=events, loras=[2, 3])
    page = write_report(layout).read_text("utf-8")
    assert "<p>No suggested epoch: no saved epoch has a finite validation loss yet.</p>" in page


# ---- the page -------------------------------------------------------------------------------------


def test_report_of_a_finished_run(run: RunLayout) -> None:
    index = write_report(run)
    assert index == run.report_dir / "index.html"
    assert sorted(p.name for p in run.report_dir.iterdir()) == ["grid.png", "index.html", "loss.png"]
    page = index.read_text("utf-8")
    assert "<span class='status finished'>finished</span>" in page
    assert "12 steps, from the progress bar (events.jsonl)." in page
    # The final file is the last epoch's; links are relative to report/.
    assert '<td>epoch 3 (final)</td><td><a href="../output/zdm.safetensors">../output/zdm.safetensors</a></td>' in page
    assert '<a href="../output/sample/zdm_e000001_00_20260101120100_1.png">#1</a>' in page
    assert "[save]\noutput_name = &quot;zdm&quot;" in page
    timings = run_timings(timeline(3, 4, 2), START.timestamp())
    assert timings.seconds["startup"] == STARTUP_SECONDS
    assert timings.step_seconds == STEP_SECONDS
    assert timings.sample_seconds == SAMPLE_SECONDS
    assert "<tr><th>training</th><td>24 s for 12 steps (2 s/step)</td></tr>" in page
    assert "<tr><th>sampling</th><td>18 s for 6 images (3 s each)</td></tr>" in page
    assert "<tr><th>start-up (imports, model load, caching)</th><td>22 s</td></tr>" in page


def test_report_of_a_failed_run_shows_the_error_and_the_hint(tmp_path: Path) -> None:
    error = ev.Error("oom", "CUDA out of memory", "set training.gradient_checkpointing = true")
    events = timeline(2, 4, 2, stop_after_step=1, error=error)
    layout = write_run(tmp_path / "run", "failed", epochs=2, sample_epochs=(), events=events, loras=[])
    (layout.root / "train.log").write_text("Traceback\n", encoding="utf-8")
    page = write_report(layout).read_text("utf-8")
    assert "<b>oom</b>: CUDA out of memory<br>Fix: set training.gradient_checkpointing = true" in page
    assert '<a href="../train.log">train.log</a>' in page
    assert "No sample images yet." in page and "No LoRA file saved yet." in page
    assert not (layout.report_dir / "grid.png").exists()


def test_report_of_a_run_that_never_started(tmp_path: Path) -> None:
    layout = write_run(tmp_path / "run", "planned", sample_epochs=(), events=[], loras=[])
    layout.events.unlink()
    page = write_report(layout).read_text("utf-8")
    assert "No loss recorded yet." in page and "No sample images yet." in page
    assert sorted(p.name for p in layout.report_dir.iterdir()) == ["index.html"]


def test_report_survives_a_broken_run_folder(tmp_path: Path) -> None:
    layout = write_run(tmp_path / "run", "running")
    layout.run_json.write_text("{not json", encoding="utf-8")
    with layout.events.open("a", encoding="utf-8") as handle:
        handle.write('{"v":1,"kind":"step","t":1,"st')  # the run was killed mid-line
    page = write_report(layout).read_text("utf-8")
    assert "<span class='status unknown'>unknown</span>" in page
    assert (layout.report_dir / "loss.png").exists()


def test_page_is_self_contained(run: RunLayout) -> None:
    (run.report_dir).mkdir()
    Image.new("RGB", (8, 8)).save(run.report_dir / "preview.png")
    page = write_report(run).read_text("utf-8")
    assert not re.search(r"https?://|<script|<link|@import|url\(", page)
    sources = re.findall(r"<img src='([^']+)'", page)
    assert sources == ["grid.png", "preview.png", "loss.png"]
    for target in re.findall(r"(?:src|href)=['\"]([^'\"]+)['\"]", page):
        assert not target.startswith("/")
        assert (run.report_dir / target).exists(), target
    assert not [p for p in run.report_dir.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in run.report_dir.iterdir())  # readable by a web server


# ---- rendered by a real browser -------------------------------------------------------------------


def test_every_image_loads_in_chromium(run: RunLayout, tmp_path: Path) -> None:
    run.report_dir.mkdir()
    Image.new("RGB", (8, 8)).save(run.report_dir / "preview.png")
    images = loaded_images(write_report(run), tmp_path)
    assert [src for src, _, _ in images] == ["grid.png", "preview.png", "loss.png"]
    assert all(complete and isinstance(width, int) and width > 0 for _, complete, width in images), images


# ---- commands -------------------------------------------------------------------------------------


def test_report_command(run: RunLayout) -> None:
    result = CliRunner().invoke(main, ["report", str(run.root)], catch_exceptions=False)
    assert (result.exit_code, result.stdout) == (0, f"report: {run.report_dir / 'index.html'}\n")


def test_report_command_refuses_a_folder_that_is_no_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(tmp_path)], catch_exceptions=False)
    assert (result.exit_code, result.stderr) == (2, f"run: {tmp_path} is not a run folder (no run.json)\n")


def test_tensorboard_names_each_run(tmp_path: Path) -> None:
    layouts = [RunLayout(tmp_path / "a" / "zdm-1"), RunLayout(tmp_path / "b" / "zdm-1")]
    for layout in layouts:
        layout.logging_dir.mkdir(parents=True)
    assert tensorboard_argv(layouts, "py", 6006) == [
        "py",
        "-m",
        "tensorboard.main",
        "--logdir_spec",
        f"zdm-1:{layouts[0].logging_dir},zdm-1-2:{layouts[1].logging_dir}",
        "--port",
        "6006",
    ]
    result = CliRunner().invoke(main, ["tensorboard", "--print", str(layouts[0].root)], catch_exceptions=False)
    assert result.stdout.endswith(f"--logdir_spec zdm-1:{layouts[0].logging_dir} --port 6006\n")
    result = CliRunner().invoke(main, ["tensorboard", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"tensorboard: {tmp_path} has no logs/ folder")


# ---- a real run -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory, e2e_assets: object) -> RealRuns:
    return real_runs(tmp_path_factory, e2e_assets)


@pytest.mark.sd_scripts
def test_real_run_report(real: RealRuns, tmp_path: Path) -> None:
    layout = RunLayout(real.run)
    assert f"report: {layout.report_dir / 'index.html'}" in real.run_stdout  # `train` names its report
    write_report(layout)
    saved = sorted(
        int(m.group(1))
        for p in layout.output_dir.glob("*.safetensors")
        if (m := re.search(r"-(\d{6})\.safetensors$", p.name))
    )
    grid = sample_grid(layout, "e2e_lora")
    assert list(grid.epochs) == [*saved, 2]  # numbered files, then the final one for the last epoch
    assert grid.prompts == ("e2etok, a red square", "e2etok, a blue square")
    image = Image.open(layout.report_dir / "grid.png")
    header, label = grid_geometry(image, len(grid.epochs), len(grid.prompts))
    assert 0 < header < 100 and 0 < label < 150
    series: LossSeries = loss_series(layout)
    assert (series.source, series.steps, series.steps_per_epoch) == ("tensorboard", 8, 4)
    assert [s for s, _ in series.per_step] == list(range(1, 9))
    assert [e for e, _ in series.per_epoch] == [1, 2]
    images = loaded_images(layout.report_dir / "index.html", tmp_path)
    assert {src for src, _, _ in images} >= {"grid.png", "loss.png"}
    assert all(complete and width > 0 for _, complete, width in images), images  # type: ignore[operator]


def test_report_writes_through_temporary_files(run: RunLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        replaced.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_report(run)
    assert [dst for _, dst in replaced] == ["grid.png", "loss.png", "index.html"]
    assert all(src.startswith(f".{dst}.") and src.endswith(".tmp") for src, dst in replaced)
