"""The validation split: sd-scripts' cut reproduced, the advice on it, and the step plan without held-out images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sample_data import write_images

from kohya_wrap.config.models import Config
from kohya_wrap.config.presets import validate
from kohya_wrap.data.dataset import plan_steps, scan
from kohya_wrap.data.holdout import hold_out, split_images, split_sizes, suggest_split


def paths(count: int) -> list[Path]:
    return [Path(f"/d/{i:02d}.png") for i in range(count)]


def names(found: tuple[Path, ...] | list[Path]) -> list[str]:
    return [p.name for p in found]


def make_config(dirs: list[dict[str, Any]], split: float, **validation: Any) -> Config:
    return validate(
        {
            "model": {"family": "sd15", "base": "/m/base.safetensors"},
            "dataset": {"dirs": dirs, "resolution": 64, "enable_bucket": False},
            "training": {"batch_size": 1, "epochs": 2, "seed": 42},
            "validation": {"split": split, **validation},
        }
    )


@pytest.mark.parametrize(
    ("count", "split", "sizes"),
    [
        (6, 0.34, (4, 2)),
        (6, 0.1, (6, 1)),  # the one held-out image is trained on as well
        (3, 0.5, (2, 2)),
        (1, 0.3, (1, 0)),
        (30, 0.2, (24, 6)),
        (10, 0.15, (9, 2)),
    ],
)
def test_split_sizes_round_the_two_parts_apart(count: int, split: float, sizes: tuple[int, int]) -> None:
    assert split_sizes(count, split) == sizes


def test_split_images_is_seeded_and_covers_every_image() -> None:
    train, validation = split_images(paths(6), 0.34, 42)
    assert names(validation) == ["00.png", "05.png"]
    assert sorted(names(train + validation)) == names(paths(6))
    assert split_images(paths(6), 0.34, 42) == (train, validation)
    assert split_images(paths(6), 0.34, 7) != (train, validation)


def test_a_comfortable_split_has_nothing_to_say() -> None:
    holdout = hold_out([(0, paths(30))], 0.2, 42)
    assert (holdout.training_images, holdout.validation_images) == (24, 6)
    assert holdout.used and holdout.warnings() == []


def test_nothing_held_out_means_no_validation() -> None:
    holdout = hold_out([(0, paths(1))], 0.3, 42)
    assert not holdout.used
    assert holdout.warnings() == [
        "validation.split: 0.3 holds out none of the 1 training images, so the run measures no validation loss; "
        "add images or set validation.split = 0"
    ]


def test_only_trained_images_held_out_means_no_validation_and_a_split_that_works() -> None:
    holdout = hold_out([(0, paths(6))], 0.1, 42)
    assert not holdout.used
    assert holdout.warnings() == [
        "validation.split: with 0.1, every held-out image is also trained on (05.png), as sd-scripts rounds the two "
        "parts apart, so the run measures no validation loss; validation.split = 0.34 holds out 2 images, none of "
        "them trained on"
    ]


def test_images_in_both_parts_and_a_small_training_set_are_warned_about() -> None:
    holdout = hold_out([(0, paths(3))], 0.5, 42)
    assert holdout.used
    assert holdout.warnings() == [
        "validation.split: 1 of the 2 images held out of dataset.dirs.0 is also trained on (00.png), as sd-scripts "
        "rounds the two parts apart; add images or set validation.split = 0",
        "validation.split: 2 of 3 images are held out and only 2 are left to train on; a dataset this small is "
        "better trained whole (validation.split = 0) and judged by its samples",
    ]


def test_a_single_held_out_image_is_warned_about() -> None:
    assert hold_out([(0, paths(20))], 0.05, 42).warnings() == [
        "validation.split: only 1 image is held out (03.png), and the loss of one image says little about the "
        "LoRA; validation.split = 0.1 holds out 2 images, none of them trained on"
    ]


def test_suggest_split_keeps_every_folder_clean() -> None:
    assert suggest_split([6], 0.1) == 0.34
    assert suggest_split([20], 0.05) == 0.1
    # Every folder at once: 0.2 puts one of 13 images in both parts (ceil 10.4 + round 2.6 > 13), and every split
    # from 0.15 to 0.23 does the same to the 10 or the 13.
    assert suggest_split([10, 13], 0.2) == 0.24
    assert suggest_split([1], 0.3) is None


def test_scan_holds_out_training_folders_only_and_the_plan_counts_the_rest(tmp_path: Path) -> None:
    write_images(tmp_path / "2_zdm", [(64, 64)] * 10)
    write_images(tmp_path / "reg", [(64, 64)] * 4)
    cfg = make_config([{"path": str(tmp_path / "2_zdm")}, {"path": str(tmp_path / "reg"), "is_reg": True}], 0.2)
    report = scan(cfg)
    assert report.holdout is not None
    (folder,) = report.holdout.folders
    assert (folder.index, len(folder.train), names(folder.validation)) == (0, 8, ["00.png", "01.png"])
    plan = plan_steps(cfg, report)
    # sd-scripts: 8 images × 2 repeats train; regularisation images fill up to the same count, unsplit.
    assert (plan.images, plan.images_with_repeats, plan.reg_images_with_repeats) == (8, 16, 16)
    assert plan.validation_images == 2
    assert plan.total_steps == 2 * 32
    assert report.warnings() == [
        "validation.split: 2 of 10 images are held out and only 8 are left to train on; a dataset this small is "
        "better trained whole (validation.split = 0) and judged by its samples"
    ]


def test_the_seed_defaults_to_the_training_seed(tmp_path: Path) -> None:
    write_images(tmp_path / "zdm", [(64, 64)] * 30)
    assert make_config([{"path": str(tmp_path / "zdm")}], 0.2).validation.seed == 42
    report = scan(make_config([{"path": str(tmp_path / "zdm")}], 0.2, seed=7))
    assert report.holdout is not None and report.holdout.seed == 7


def test_a_split_without_a_clean_validation_image_trains_on_everything(tmp_path: Path) -> None:
    # A preset may turn validation on for a dataset too small for it: the run goes on without, and says so.
    write_images(tmp_path / "zdm", [(64, 64)] * 6)
    cfg = make_config([{"path": str(tmp_path / "zdm")}], 0.1)
    report = scan(cfg)
    plan = plan_steps(cfg, report)
    assert (plan.images, plan.validation_images) == (6, 0)
    assert report.warnings() == [
        "validation.split: with 0.1, every held-out image is also trained on (05.png), as sd-scripts rounds the two "
        "parts apart, so the run measures no validation loss; validation.split = 0.34 holds out 2 images, none of "
        "them trained on"
    ]


def test_without_a_split_nothing_is_held_out(tmp_path: Path) -> None:
    write_images(tmp_path / "zdm", [(64, 64)] * 6)
    report = scan(make_config([{"path": str(tmp_path / "zdm")}], 0))
    assert report.holdout is None
    assert plan_steps(make_config([{"path": str(tmp_path / "zdm")}], 0), report).images == 6


# What sd-scripts' own split_train_val makes of the same folders (run in its checkout).
SD_SPLIT = """
import json, sys
from library.train_util import split_train_val
out = []
for count, split, seed in json.loads(sys.argv[1]):
    paths = [f"/d/{i:03d}.png" for i in range(count)]
    sizes = [None] * count
    out.append([split_train_val(paths, sizes, flag, split, seed)[0] for flag in (True, False)])
print(json.dumps(out))
"""


@pytest.mark.sd_scripts
def test_the_split_matches_sd_scripts(sd_scripts_dir: Path) -> None:
    cases = [
        (count, split, seed)
        for count in (1, 2, 3, 5, 6, 7, 10, 13, 40, 101)
        for split in (0.1, 0.2, 0.25, 0.3, 0.34, 0.5)
        for seed in (0, 42, 2**32 - 1)
    ]
    done = subprocess.run(
        [sys.executable, "-c", SD_SPLIT, json.dumps(cases)],
        cwd=sd_scripts_dir,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    for (count, split, seed), (train, validation) in zip(cases, theirs, strict=True):
        ours = split_images([f"/d/{i:03d}.png" for i in range(count)], split, seed)
        assert ours == (train, validation), (count, split, seed)
