"""Tests for `kohya-wrap compare`: labels from the settings that differ, placeholders, epoch choice, errors."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from browser import loaded_images
from click.testing import CliRunner
from filetree import snapshot
from PIL import Image
from real_run import RealRuns, real_runs
from synthetic_run import PROMPTS, grid_geometry, pixel, timeline, write_run

from kohya_wrap.cli import main
from kohya_wrap.commands.compare import compare
from kohya_wrap.queue.sweep import Axes, SweepRecord, SweepRun, write_record
from kohya_wrap.review.compare import (
    NOT_SET,
    ROW_LABEL_WIDTH,
    Comparison,
    compare_runs,
    differing_keys,
    flatten_settings,
    format_value,
    render_grid,
    table_rows,
)
from kohya_wrap.review.report import CELL
from kohya_wrap.train import events as ev
from kohya_wrap.train.layout import RunLayout

BASE: dict[str, Any] = {
    "preset": "sd15-character",
    "model": {"family": "sd15", "base": "/models/sd15.safetensors"},
    "network": {"dim": 16, "alpha": 8.0},
    "optimizer": {"type": "AdamW8bit", "learning_rate": 1e-4, "scheduler": "cosine", "args": {}},
    "training": {"epochs": 3, "seed": 42, "shuffle_tags": True},
    "sampling": {"every_n_epochs": 1, "prompts": [{"text": p, "steps": 20} for p in PROMPTS]},
    "save": {"output_name": "zdm"},
}
WHEN = dt.datetime(2026, 1, 2, 3, 4, 5)
PLACEHOLDER = (238, 238, 238)


def merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with dotted `changes` applied (`network.dim`: 32)."""
    doc = copy.deepcopy(dict(base))
    for key, value in changes.items():
        *parents, last = key.split(".")
        table = doc
        for part in parents:
            table = table.setdefault(part, {})
        table[last] = value
    return doc


def shade(run: int, epoch: int, prompt: int) -> tuple[int, int, int]:
    """A sample colour that tells run, epoch and prompt apart."""
    return (30 + 50 * run, 20 + 60 * epoch, 40 + 120 * prompt)


def fake_run(
    root: Path,
    index: int,
    changes: Mapping[str, Any] | None = None,
    status: str = "finished",
    epochs: int = 3,
    sample_epochs: Sequence[int] | None = None,
    prompts: int = len(PROMPTS),
) -> RunLayout:
    """A run folder as kohya_wrap leaves it, with its resolved config and samples coloured by `shade`."""
    sampled = tuple(range(1, epochs + 1)) if sample_epochs is None else tuple(sample_epochs)
    # An unfinished run saved a LoRA for each epoch it sampled, a finished one for every epoch.
    loras = None if status == "finished" else sampled
    layout = write_run(root, status, epochs, 4, sampled, events=timeline(epochs, 4, prompts), loras=loras)
    doc = merged(BASE, {"training.epochs": epochs, **(changes or {})})
    doc["sampling"]["prompts"] = doc["sampling"]["prompts"][:prompts]
    layout.config.write_text(tomli_w.dumps(doc), encoding="utf-8")
    entries = [{"prompt": p["text"], "sample_steps": 20} for p in doc["sampling"]["prompts"]]
    layout.prompts.write_text(json.dumps(entries), encoding="utf-8")
    for path in layout.samples_dir.iterdir():
        match = re.match(r"zdm_e(\d{6})_(\d{2})_", path.name)
        assert match
        epoch, prompt = int(match[1]), int(match[2])
        if prompt >= prompts:
            path.unlink()
        else:
            Image.new("RGB", (64, 48), shade(index, epoch, prompt)).save(path)
    return layout


def sweep_2x2(runs: Path) -> list[RunLayout]:
    """Four runs of a scheduler × dim grid, each with its own output name, as a sweep makes them."""
    layouts = []
    for n, (scheduler, dim) in enumerate((s, d) for s in ("cosine", "constant") for d in (16, 32)):
        name = f"zdm-{scheduler}-d{dim}"
        changes = {"optimizer.scheduler": scheduler, "network.dim": dim, "save.output_name": name}
        layouts.append(fake_run(runs / f"{name}-20260101-120000", n, changes))
    return layouts


def grid_of(comparison: Comparison) -> tuple[Image.Image, int]:
    image = render_grid(comparison)
    header, label = grid_geometry(image, len(comparison.rows), len(comparison.runs))
    assert label == ROW_LABEL_WIDTH
    return image, header


# ---- settings and labels --------------------------------------------------------------------------


def test_flattened_settings_use_dotted_keys_and_number_tables_from_one() -> None:
    flat = flatten_settings(BASE)
    assert flat["optimizer.type"] == "AdamW8bit"
    assert flat["sampling.prompts[2].text"] == PROMPTS[1]
    assert "optimizer.args" not in flat  # an empty table holds no setting
    assert flatten_settings({"tagging": {"remove_tags": ["a", "b"]}}) == {"tagging.remove_tags": ["a", "b"]}


def test_values_read_as_the_user_writes_them() -> None:
    assert [format_value(v) for v in ("Lion", 16, 1e-4, 5e-05, True, ["a", "b"], None)] == [
        "Lion",
        "16",
        "0.0001",
        "5e-05",
        "true",
        '["a", "b"]',
        NOT_SET,
    ]


def test_only_keys_that_differ_somewhere_are_kept_in_config_order() -> None:
    runs = [
        {"a": 1, "b": "x", "c": [1]},
        {"a": 1, "b": "y", "c": [1]},
        {"a": 1, "b": "x", "c": [1], "d": 2.0},
    ]
    assert differing_keys(runs) == ("b", "d")
    assert differing_keys([{"n": 1}, {"n": 1.0}]) == ("n",)  # 1 and 1.0 are different TOML values


def test_a_2x2_sweep_gives_four_columns_labelled_by_the_grid_and_two_prompt_rows(tmp_path: Path) -> None:
    comparison = compare_runs(sweep_2x2(tmp_path))
    assert comparison.keys == ("network.dim", "optimizer.scheduler")
    assert [comparison.labels(i) for i in range(4)] == [
        ("network.dim=16", "optimizer.scheduler=cosine"),
        ("network.dim=32", "optimizer.scheduler=cosine"),
        ("network.dim=16", "optimizer.scheduler=constant"),
        ("network.dim=32", "optimizer.scheduler=constant"),
    ]
    assert comparison.rows == tuple(f"#{i + 1} {text}" for i, text in enumerate(PROMPTS))
    assert [run.epoch_note for run in comparison.runs] == ["epoch 3 (final)"] * 4
    image, header = grid_of(comparison)
    assert image.size == (ROW_LABEL_WIDTH + 4 * (CELL + 8), header + 2 * (CELL + 8))
    for column in range(4):
        for row in range(2):
            assert pixel(image, row, column, header, ROW_LABEL_WIDTH) == shade(column, 3, row)
    assert comparison.missing() == []


def test_runs_with_the_same_settings_are_labelled_by_folder(tmp_path: Path) -> None:
    layouts = [fake_run(tmp_path / "zdm-a", 0), fake_run(tmp_path / "zdm-b", 1, {"save.output_name": "zdm-b"})]
    comparison = compare_runs(layouts)
    assert comparison.keys == ()
    assert [comparison.labels(i) for i in range(2)] == [("zdm-a",), ("zdm-b",)]
    assert table_rows(comparison)[0] == ["run", "final loss", "wall time", "status"]


def test_table_holds_the_differing_settings_final_loss_and_wall_time(tmp_path: Path) -> None:
    layouts = [fake_run(tmp_path / "a", 0, {"optimizer.type": "Lion"}), fake_run(tmp_path / "b", 1, epochs=2)]
    rows = table_rows(compare_runs(layouts))
    # timeline(): loss 1/step, 4 steps an epoch; 5 s to the first event, 17 s loading, 15 s an epoch
    # (8 training, 1 saving, 6 sampling), 1 s from the last event to the end.
    assert rows == [
        ["optimizer.type", "training.epochs", "final loss", "wall time", "status"],
        ["Lion", "3", "0.0833 (epoch 3 average)", "68 s", "finished"],
        ["AdamW8bit", "2", "0.1250 (epoch 2 average)", "53 s", "finished"],
    ]


# ---- epochs and placeholders ----------------------------------------------------------------------


def test_final_shows_each_runs_own_last_epoch(tmp_path: Path) -> None:
    layouts = [fake_run(tmp_path / "a", 0, epochs=3), fake_run(tmp_path / "b", 1, epochs=2)]
    comparison = compare_runs(layouts, "final")
    assert [(run.epoch, run.epoch_note) for run in comparison.runs] == [(3, "epoch 3 (final)"), (2, "epoch 2 (final)")]
    image, header = grid_of(comparison)
    assert pixel(image, 1, 0, header, ROW_LABEL_WIDTH) == shade(0, 3, 1)
    assert pixel(image, 1, 1, header, ROW_LABEL_WIDTH) == shade(1, 2, 1)


def test_an_epoch_one_run_lacks_gets_a_placeholder_that_says_why(tmp_path: Path) -> None:
    layouts = [
        fake_run(tmp_path / "three", 0, epochs=3),
        fake_run(tmp_path / "two", 1, epochs=2),
        fake_run(tmp_path / "every-2", 2, epochs=4, sample_epochs=(2, 4)),
        fake_run(tmp_path / "stopped", 3, status="interrupted", epochs=3, sample_epochs=(1, 2)),
        fake_run(tmp_path / "queued", 4, status="planned", epochs=3, sample_epochs=()),
    ]
    comparison = compare_runs(layouts, 3)
    assert [run.epoch_note for run in comparison.runs] == ["epoch 3"] * 5
    reasons = [(run.layout.root.name, row, reason) for run, row, reason in comparison.missing()]
    assert reasons == [
        ("two", 0, "this run has 2 epochs: no epoch 3"),
        ("two", 1, "this run has 2 epochs: no epoch 3"),
        ("every-2", 0, "no samples saved at epoch 3"),
        ("every-2", 1, "no samples saved at epoch 3"),
        ("stopped", 0, "run interrupted before epoch 3"),
        ("stopped", 1, "run interrupted before epoch 3"),
        ("queued", 0, "not trained yet"),
        ("queued", 1, "not trained yet"),
    ]
    image, header = grid_of(comparison)
    assert pixel(image, 0, 0, header, ROW_LABEL_WIDTH) == shade(0, 3, 0)
    for column in range(1, 5):
        x, y = ROW_LABEL_WIDTH + column * (CELL + 8) + 4, header + 4
        assert image.getpixel((x, y)) == PLACEHOLDER  # a drawn grey cell, not a dropped column
        text = image.crop((x, y, x + CELL - 8, y + CELL - 8)).getcolors(CELL * CELL)
        assert text is not None and len(text) > 1  # with the reason written in it


def validated(layout: RunLayout, losses: Mapping[int, float]) -> None:
    """Add sd-scripts' validation pass of each epoch to a run's events."""
    with layout.events.open("a", encoding="utf-8") as handle:
        for epoch, loss in losses.items():
            handle.write(ev.to_json(ev.Validation(epoch, 4 * epoch, loss), 1.0) + "\n")


def test_best_shows_the_epoch_with_the_lowest_validation_loss(tmp_path: Path) -> None:
    a, b, c = (fake_run(tmp_path / name, n, {"network.dim": 8 * (n + 1)}) for n, name in enumerate("abc"))
    validated(a, {1: 0.31, 2: 0.22, 3: 0.25})
    validated(b, {1: 0.30, 2: 0.29, 3: 0.27})
    comparison = compare_runs([a, b, c], "best")
    assert [(run.epoch, run.epoch_note) for run in comparison.runs] == [
        (2, "epoch 2 (best: validation loss 0.22)"),
        (3, "epoch 3 (best: validation loss 0.27)"),
        (None, "no best epoch (no validation loss)"),
    ]
    assert [(run.layout.root.name, row, reason) for run, row, reason in comparison.missing()] == [
        ("c", 0, "no validation loss recorded, so no best epoch"),
        ("c", 1, "no validation loss recorded, so no best epoch"),
    ]
    image, header = grid_of(comparison)
    assert [pixel(image, 1, column, header, ROW_LABEL_WIDTH) for column in range(2)] == [shade(0, 2, 1), shade(1, 3, 1)]
    assert image.getpixel((ROW_LABEL_WIDTH + 2 * (CELL + 8) + 4, header + 4)) == PLACEHOLDER
    result = compare([a.root, b.root, c.root], epoch="best", output=tmp_path / "out")
    assert "Samples at each run&#x27;s best epoch (lowest validation loss)." in result.page.read_text("utf-8")


def test_runs_with_fewer_prompts_or_none_keep_their_column(tmp_path: Path) -> None:
    layouts = [
        fake_run(tmp_path / "two", 0),
        fake_run(tmp_path / "one", 1, prompts=1),
        fake_run(tmp_path / "none", 2, prompts=0),
    ]
    comparison = compare_runs(layouts)
    assert comparison.rows == tuple(f"#{i + 1} {text}" for i, text in enumerate(PROMPTS))
    assert [(run.layout.root.name, row, reason) for run, row, reason in comparison.missing()] == [
        ("one", 1, "this run has no prompt #2"),
        ("none", 0, "this run has no sample prompts"),
        ("none", 1, "this run has no sample prompts"),
    ]
    # A prompt table that a run lacks is one setting, not one per key in it; no prompts at all is an empty list.
    assert comparison.keys == ("sampling.prompts[1]", "sampling.prompts[2]", "sampling.prompts")
    assert comparison.labels(1) == (
        f'sampling.prompts[1]={{"text": "{PROMPTS[0]}", "steps": 20}}',
        "sampling.prompts[2]=(not set)",
        "sampling.prompts=(not set)",
    )
    assert comparison.labels(2) == (
        "sampling.prompts[1]=(not set)",
        "sampling.prompts[2]=(not set)",
        "sampling.prompts=[]",
    )


def test_a_prompt_that_differs_between_runs_is_named_on_the_page(tmp_path: Path) -> None:
    a = fake_run(tmp_path / "a", 0)
    b = fake_run(tmp_path / "b", 1, {"sampling.prompts": [{"text": "zdm, a green cube"}, {"text": PROMPTS[1]}]})
    comparison = compare_runs([a, b])
    assert comparison.rows[0] == "#1 (the prompt differs between runs; see the page)"
    assert comparison.rows[1] == f"#2 {PROMPTS[1]}"


# ---- the command ----------------------------------------------------------------------------------


def test_compare_writes_a_new_folder_beside_the_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    layouts = sweep_2x2(runs)
    result = compare([layout.root for layout in layouts], when=WHEN)
    folder = runs / "compare-20260102-030405"
    assert (result.folder, result.page, result.sheet) == (folder, folder / "index.html", folder / "compare.png")
    assert sorted(p.name for p in folder.iterdir()) == ["compare.png", "index.html"]
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in [folder, *folder.iterdir()])
    assert not [p for p in runs.iterdir() if p.name.startswith(".")]
    again = compare([layout.root for layout in layouts], when=WHEN)
    assert again.folder == runs / "compare-20260102-030405-2"  # never into an existing folder
    page = result.page.read_text("utf-8")
    assert not re.search(r"https?://|<script|<link|@import|url\(", page)
    assert re.findall(r"<img src='([^']+)'", page) == ["compare.png"]
    assert "<td>optimizer.scheduler</td>" not in page and "<th>optimizer.scheduler</th>" in page
    sheet = Image.open(result.sheet)
    assert sheet.width >= ROW_LABEL_WIDTH + 4 * (CELL + 8)
    grid = render_grid(compare_runs(layouts))
    assert sheet.crop((0, 0, grid.width, grid.height)).tobytes() == grid.tobytes()  # loss and table below it
    assert sheet.height > grid.height + 300


def test_every_image_of_the_page_loads_in_chromium(tmp_path: Path) -> None:
    layouts = sweep_2x2(tmp_path / "runs")
    result = compare([layout.root for layout in layouts], output=tmp_path / "sheet")
    images = loaded_images(result.page, tmp_path)
    assert [src for src, _, _ in images] == ["compare.png"]
    assert all(complete and isinstance(width, int) and width > 0 for _, complete, width in images), images


def write_sweep(runs: Path, name: str, layouts: Sequence[RunLayout]) -> None:
    """The sweep's record, as `kohya-wrap sweep` leaves it."""
    axes: Axes = {"optimizer.scheduler": ["cosine", "constant"], "network.dim": [16, 32]}
    write_record(runs, SweepRecord(name, axes, tuple(SweepRun(layout.root, {}) for layout in layouts)))


def test_cli_compares_a_sweep(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    layouts = sweep_2x2(runs)
    write_sweep(runs, "sched-dim", layouts)
    result = CliRunner().invoke(
        main, ["compare", "--sweep", "sched-dim", "--runs-dir", str(runs), "--epoch", "2"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    (folder,) = [p for p in runs.iterdir() if p.name.startswith("compare-sched-dim-")]
    assert result.stdout == f"sheet: {folder / 'compare.png'}\ncompare: {folder / 'index.html'}\n"
    assert result.stderr == ""
    assert "Samples at epoch 2." in (folder / "index.html").read_text("utf-8")


def test_cli_notes_each_placeholder(tmp_path: Path) -> None:
    a, b = fake_run(tmp_path / "a", 0), fake_run(tmp_path / "b", 1, prompts=1)
    result = CliRunner().invoke(main, ["compare", str(a.root), str(b.root), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert result.stderr == "note: b: prompt #2: this run has no prompt #2\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{a}"], "compare: got 1 run; give two or more to compare"),
        ([], "compare: give two or more run folders, or --sweep NAME"),
        (["{a}", "{tmp}/data"], "run: {tmp}/data is not a run folder (no run.json)"),
        (["{a}", "{tmp}/nowhere"], "run: {tmp}/nowhere is not a run folder (no run.json)"),
        (["{a}", "{a}"], "compare: {a} is given twice; give each run once"),
        (["{a}", "{b}", "--sweep", "s"], "compare: give run folders or --sweep NAME, not both"),
        (
            ["--sweep", "nope", "--runs-dir", "{tmp}/runs"],
            "sweep: no sweep 'nope' in {tmp}/runs; known sweeps: one",
        ),
        (["--sweep", "one", "--runs-dir", "{tmp}/runs"], "compare: sweep one has 1 run; give two or more to compare"),
        (
            ["--sweep", "../sweeps/one", "--runs-dir", "{tmp}/runs"],
            "--sweep: '../sweeps/one' is not a usable sweep name; use letters, digits, '.', '_' or '-' (up to 100), "
            "starting with a letter or digit",
        ),
        (
            ["{a}", "{b}", "--epoch", "4"],
            "compare: --epoch 4: no run has saved epoch 4 (saved epochs: 1, 2, 3); choose another, or final",
        ),
        (["{a}", "{b}", "--epoch", "0"], "compare: --epoch 0: epochs are numbered from 1"),
        (["{a}", "{b}", "--epoch", "last"], "compare: --epoch last: give final, best or an epoch number"),
        (
            ["{a}", "{b}", "-o", "{tmp}/data"],
            "compare: -o {tmp}/data already exists; choose a new folder (nothing is overwritten)",
        ),
        (
            ["{a}", "{b}", "-o", "{tmp}/notes.txt/sheet"],
            "compare: -o {tmp}/notes.txt/sheet: {tmp}/notes.txt is a file, so {tmp}/notes.txt/sheet cannot be created "
            "inside it",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    runs = tmp_path / "runs"
    a, b = fake_run(runs / "a", 0), fake_run(runs / "b", 1, {"network.dim": 32})
    write_sweep(runs, "one", [a])
    (tmp_path / "data").mkdir()
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    before = snapshot(tmp_path)
    names = {"a": a.root, "b": b.root, "tmp": tmp_path}
    result = CliRunner().invoke(main, ["compare", *(arg.format(**names) for arg in args)], catch_exceptions=False)
    assert (result.exit_code, result.stderr, result.stdout) == (2, message.format(**names) + "\n", "")
    assert snapshot(tmp_path) == before


def test_a_broken_config_is_named(tmp_path: Path) -> None:
    a, b = fake_run(tmp_path / "a", 0), fake_run(tmp_path / "b", 1)
    b.config.write_text("[model\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["compare", str(a.root), str(b.root)], catch_exceptions=False)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"compare: {b.config} is not valid TOML: ")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("compare")]


# ---- real runs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory, e2e_assets: object) -> RealRuns:
    return real_runs(tmp_path_factory, e2e_assets)


@pytest.mark.sd_scripts
def test_real_runs_side_by_side(real: RealRuns, tmp_path: Path) -> None:
    result = compare([real.calibration, real.run], output=tmp_path / "sheet")
    comparison = compare_runs([RunLayout(real.calibration), RunLayout(real.run)])
    # The calibration run has 1 epoch, 1 prompt and its own output name (which names a run, so is no label).
    assert comparison.keys == ("training.epochs", "sampling.prompts[2]")
    assert result.labels == (
        ("training.epochs=1", "sampling.prompts[2]=(not set)"),
        (
            "training.epochs=2",
            'sampling.prompts[2]={"text": "e2etok, a blue square", "negative": "blurry", "width": 64, '
            '"height": 64, "steps": 2, "cfg": 7.0}',
        ),
    )
    assert comparison.rows == ("#1 e2etok, a red square", "#2 e2etok, a blue square")
    assert [run.epoch for run in comparison.runs] == [1, 2]
    assert [cell.image is not None for run in comparison.runs for cell in run.cells] == [True, False, True, True]
    assert result.missing == (f"{real.calibration.name}: prompt #2: this run has no prompt #2",)
    assert all(run.loss.source == "tensorboard" and run.final_loss is not None for run in comparison.runs)
    assert all(run.wall_seconds > 0 for run in comparison.runs)
    images = loaded_images(result.page, tmp_path)
    assert [src for src, _, _ in images] == ["compare.png"]
    assert all(complete and isinstance(width, int) and width > 0 for _, complete, width in images), images
