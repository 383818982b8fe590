"""A real CPU run with a validation split: validation loss in events.jsonl, the report and `outputs`."""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass

import pytest
from PIL import Image
from test_e2e_train import events_of, kohya_wrap, only_run, write_config

from kohya_wrap.review.outputs import best_epoch
from kohya_wrap.review.report import loss_series
from kohya_wrap.train import events as ev
from kohya_wrap.train.layout import RunLayout

pytestmark = pytest.mark.sd_scripts


@dataclass(frozen=True)
class ValidatedRun:
    layout: RunLayout
    stdout: str


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory, e2e_assets) -> ValidatedRun:  # type: ignore[no-untyped-def]
    """One 2-epoch run of 6 images, 2 of them held out (made once for every test here)."""
    root = tmp_path_factory.mktemp("validated")
    config = write_config(root, e2e_assets, e2e_assets.sd15_model)
    images = root / "data" / "e2etok"
    for i, rgb in ((4, (140, 30, 160)), (5, (30, 160, 160))):
        Image.new("RGB", (64, 64), rgb).save(images / f"img{i}.png")
        (images / f"img{i}.txt").write_text("e2etok, a coloured square, white box", encoding="utf-8")
    with config.open("a", encoding="utf-8") as handle:
        handle.write("[validation]\nsplit = 0.34\n")
    done = subprocess.run(kohya_wrap("train", str(config)), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return ValidatedRun(RunLayout(only_run(root)), done.stdout)


def test_sd_scripts_held_out_what_we_planned(validated: ValidatedRun) -> None:
    layout = validated.layout
    dataset = layout.dataset_toml.read_text("utf-8")
    assert "validation_split = 0.34\nvalidation_seed = 42\n" in dataset
    log = layout.log.read_text("utf-8")
    assert "2 validation images with repeats." in log
    (started,) = [e for e in events_of(layout.root) if isinstance(e, ev.RunStarted)]
    record = json.loads(layout.run_json.read_text("utf-8"))
    # Our plan (4 training images, 4 steps an epoch) is what sd-scripts counted after its split.
    assert (started.images, started.total_steps, record["total_steps"]) == (4, 8, 8)


def test_validation_loss_is_an_event_per_epoch(validated: ValidatedRun) -> None:
    events = events_of(validated.layout.root)
    validations = [e for e in events if isinstance(e, ev.Validation)]
    assert [(v.epoch, v.step) for v in validations] == [(1, 4), (2, 8)]
    assert all(math.isfinite(v.loss) and v.loss > 0 for v in validations)
    # Measured before the epoch's LoRA is saved, so it belongs to that file.
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("Validation") < kinds.index("CheckpointSaved")
    assert "validation loss (epoch 1): " in validated.stdout


def test_the_report_plots_validation_and_suggests_an_epoch(validated: ValidatedRun) -> None:
    layout = validated.layout
    series = loss_series(layout)
    assert [(epoch, step) for epoch, step, _ in series.validation_points] == [(1, 4), (2, 8)]
    best = best_epoch(layout)
    assert best is not None and best.lora.is_file()
    page = (layout.report_dir / "index.html").read_text("utf-8")
    assert f"<b>Suggested epoch: {best.epoch}</b>" in page
    assert "<th>validation loss</th>" in page and "the samples above have the last word" in page
    assert (layout.report_dir / "loss.png").is_file()


def test_outputs_lists_validation_loss_and_prints_the_best_file(validated: ValidatedRun) -> None:
    root = validated.layout.root
    listed = subprocess.run(kohya_wrap("outputs", str(root)), capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[:2] for line in epochs] == [["epoch", "1"], ["epoch", "2"]]
    assert all("  val " in line for line in epochs)
    assert lines[-1].startswith("suggested: epoch ")
    best = subprocess.run(kohya_wrap("outputs", str(root), "--best"), capture_output=True, text=True, timeout=60)
    assert best.returncode == 0, best.stderr
    found = best_epoch(validated.layout)
    assert found is not None
    assert best.stdout == f"{found.lora}\n"
    assert best.stderr == f"{found.reason}; the samples have the last word\n"
