"""Tests for kohya_wrap.data.dataset: folder scanning and sd-scripts' step maths (plan_steps)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from sample_data import write_images

from kohya_wrap.config.models import Config
from kohya_wrap.config.presets import validate
from kohya_wrap.data.dataset import assign_bucket, bucket_resolutions, plan_steps, scan
from kohya_wrap.errors import DatasetError


def make_config(dirs: list[dict[str, Any]], **sections: dict[str, Any]) -> Config:
    doc: dict[str, Any] = {
        "model": {"family": "sd15", "base": "/m/base.safetensors"},
        "dataset": {"dirs": dirs},
    }
    for name, values in sections.items():
        doc.setdefault(name, {}).update(values)
    return validate(doc)


def test_seaart_walkthrough_7_images_10_repeats_10_epochs_batch_1_is_700_steps(tmp_path: Path) -> None:
    folder = tmp_path / "10_zdm 1boy"
    write_images(folder, [(512, 512)] * 7)
    cfg = make_config([{"path": str(folder)}], training={"epochs": 10, "batch_size": 1})
    plan = plan_steps(cfg, scan(cfg))
    assert (plan.images, plan.images_with_repeats, plan.batches_per_epoch, plan.total_steps) == (
        7,
        70,
        70,
        700,
    )
    assert plan.seaart_cost == 700  # SeaArt's stamina: images × repeats × epochs
    assert plan.buckets == (((512, 512), 70),)


def test_without_buckets_every_image_is_the_training_resolution(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    write_images(folder, [(512, 512), (512, 768), (768, 512)])
    cfg = make_config(
        [{"path": str(folder), "repeats": 3}],
        dataset={"enable_bucket": False},
        training={"epochs": 2, "batch_size": 2},
    )
    plan = plan_steps(cfg, scan(cfg))
    # One bucket of 9 images with repeats: ceil(9 / 2) = 5 batches per epoch.
    assert (plan.buckets, plan.batches_per_epoch, plan.total_steps) == ((((512, 512), 9),), 5, 10)


def test_sd15_bucket_resolutions_by_hand() -> None:
    # make_bucket_resolutions((512, 512), 256, 1024, 64): for each width w from 256 to 1024 in steps
    # of 64, height = min(1024, (512 * 512 // w) // 64 * 64), kept when ≥ 256, both orientations.
    assert bucket_resolutions(512, 256, 1024) == sorted(
        {
            (512, 512),
            (256, 1024),
            (1024, 256),
            (320, 768),
            (768, 320),
            (384, 640),
            (640, 384),
            (448, 576),
            (576, 448),
            (704, 320),
            (320, 704),
            (832, 256),
            (256, 832),
            (896, 256),
            (256, 896),
            (960, 256),
            (256, 960),
        }
    )


@pytest.mark.parametrize(
    ("size", "bucket"),
    [
        ((512, 512), (512, 512)),  # a bucket size itself
        ((1000, 1000), (512, 512)),  # aspect 1.0
        ((512, 768), (384, 640)),  # aspect 0.667: 384/640 = 0.6 (error 0.067) beats 448/576 = 0.778 (0.111)
        ((768, 512), (640, 384)),  # aspect 1.5: 640/384 = 1.667 (0.167) beats 576/448 = 1.286 (0.214)
        ((600, 400), (640, 384)),
        ((300, 1200), (256, 1024)),  # aspect 0.25: exact
        ((448, 576), (448, 576)),
    ],
)
def test_assign_bucket_like_sd_scripts_select_bucket(size: tuple[int, int], bucket: tuple[int, int]) -> None:
    assert assign_bucket(size, bucket_resolutions(512, 256, 1024)) == bucket


def test_buckets_with_mixed_aspect_ratios(tmp_path: Path) -> None:
    folder = tmp_path / "2_zdm"
    write_images(folder, [(512, 512), (512, 512), (512, 768), (512, 768), (512, 768), (768, 512), (600, 400)])
    cfg = make_config([{"path": str(folder)}], training={"epochs": 3, "batch_size": 2})
    plan = plan_steps(cfg, scan(cfg))
    # With 2 repeats: (384, 640) 3 images → 6, (512, 512) 2 → 4, (640, 384) 2 → 4.
    # Batches per bucket: ceil(6/2) + ceil(4/2) + ceil(4/2) = 3 + 2 + 2 = 7; 3 epochs → 21 steps.
    assert plan.buckets == (((384, 640), 6), ((512, 512), 4), ((640, 384), 4))
    assert (plan.images_with_repeats, plan.batches_per_epoch, plan.total_steps) == (14, 7, 21)


def test_a_partial_batch_per_bucket_counts_as_a_batch(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    write_images(folder, [(512, 512), (512, 768), (768, 512)])
    cfg = make_config([{"path": str(folder)}], training={"epochs": 1, "batch_size": 4})
    # Three buckets of one image: 3 batches, where a single bucket of 3 would be 1.
    assert plan_steps(cfg, scan(cfg)).batches_per_epoch == 3


def test_several_training_folders_add_up(tmp_path: Path) -> None:
    write_images(tmp_path / "20_zdm 1boy", [(512, 512)] * 2)
    write_images(tmp_path / "imgs", [(512, 512)] * 3)
    cfg = make_config(
        [{"path": str(tmp_path / "20_zdm 1boy")}, {"path": str(tmp_path / "imgs"), "repeats": 5}],
        training={"epochs": 2, "batch_size": 5},
    )
    plan = plan_steps(cfg, scan(cfg))
    assert (plan.images, plan.images_with_repeats, plan.batches_per_epoch, plan.total_steps) == (
        5,
        55,
        11,
        22,
    )


@pytest.mark.parametrize(
    ("train", "reg", "reg_total"),
    [
        # DreamBoothDataset.__init__: the first pass takes each reg image with its repeats and stops once
        # the training count is reached (overshooting it); later passes add one repeat per image in turn.
        ((2, 5), (3, 4), 12),  # 10 training: 4 + 4 + 4 = 12, the third image overshoots
        ((2, 5), (3, 1), 10),  # 10 training: 3 on the first pass, then +1 per image: 4 + 3 + 3
        ((1, 3), (5, 1), 3),  # 3 training: only the first three reg images are used
        ((1, 2), (1, 5), 5),  # 2 training: one reg image with 5 repeats
    ],
)
def test_regularisation_images_follow_sd_scripts_cycling(
    tmp_path: Path, train: tuple[int, int], reg: tuple[int, int], reg_total: int
) -> None:
    write_images(tmp_path / "train", [(512, 512)] * train[0])
    write_images(tmp_path / "reg", [(512, 512)] * reg[0], caption=None)
    cfg = make_config(
        [
            {"path": str(tmp_path / "train"), "repeats": train[1]},
            {"path": str(tmp_path / "reg"), "repeats": reg[1], "is_reg": True},
        ],
        dataset={"enable_bucket": False},
        training={"epochs": 1, "batch_size": 1},
    )
    plan = plan_steps(cfg, scan(cfg))
    assert plan.images_with_repeats == train[0] * train[1]
    assert plan.reg_images_with_repeats == reg_total
    assert plan.batches_per_epoch == train[0] * train[1] + reg_total


def test_regularisation_images_get_their_own_buckets(tmp_path: Path) -> None:
    write_images(tmp_path / "train", [(512, 512)] * 4)
    write_images(tmp_path / "reg", [(512, 768), (768, 512)], caption=None)
    cfg = make_config(
        [{"path": str(tmp_path / "train")}, {"path": str(tmp_path / "reg"), "is_reg": True}],
        training={"epochs": 1, "batch_size": 2},
    )
    plan = plan_steps(cfg, scan(cfg))
    # 4 training images; reg images cycled to 4: each twice.
    assert plan.buckets == (((384, 640), 2), ((512, 512), 4), ((640, 384), 2))
    assert plan.batches_per_epoch == 1 + 2 + 1


@pytest.mark.parametrize(("processes", "steps"), [(1, 70), (2, 40), (3, 30), (8, 10)])
def test_steps_are_split_over_processes(tmp_path: Path, processes: int, steps: int) -> None:
    folder = tmp_path / "7_zdm"
    write_images(folder, [(512, 512)])
    cfg = make_config(
        [{"path": str(folder)}],
        training={"epochs": 10, "batch_size": 1},
        run={"num_processes": processes, "gpu_ids": list(range(processes))},
    )
    plan = plan_steps(cfg, scan(cfg))
    # train_network.py: max_train_epochs × ceil(batches / processes / gradient accumulation).
    assert plan.total_steps == 10 * math.ceil(7 / processes) == steps
    assert plan.num_processes == processes


def test_scan_reads_sizes_and_captions(tmp_path: Path) -> None:
    folder = tmp_path / "20_zdm 1boy"
    write_images(folder, [(64, 96)], caption=None)
    write_images(tmp_path / "other", [(64, 64)])
    (folder / "01.PNG").write_bytes((tmp_path / "other" / "00.png").read_bytes())
    (folder / "01.txt").write_text("zdm\n", encoding="utf-8")
    (folder / "notes.md").write_text("not an image", encoding="utf-8")
    cfg = make_config([{"path": str(folder)}])
    report = scan(cfg)
    (only,) = report.folders
    assert [(i.path.name, i.size, i.caption.name if i.caption else None) for i in only.images] == [
        ("00.png", (64, 96), None),
        ("01.PNG", (64, 64), "01.txt"),
    ]
    assert (only.repeats, only.class_token, report.train_images) == (20, "zdm 1boy", 2)
    assert report.warnings() == [
        "dataset.dirs.0.path: 1 of 2 images have no .txt caption and will be captioned 'zdm 1boy': 00.png"
    ]


def test_missing_captions_without_class_token_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    write_images(folder, [(64, 64)] * 7, caption=None)
    cfg = make_config([{"path": str(folder)}])
    assert scan(cfg).warnings() == [
        "dataset.dirs.0.path: 7 of 7 images have no .txt caption and train with an empty one: 00.png, "
        "01.png, 02.png, 03.png, 04.png and 2 more; run `kohya-wrap tag` on the folder"
    ]


def test_mixed_case_extensions_are_named_because_sd_scripts_skips_them(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    write_images(folder, [(64, 64)])
    (folder / "00.png").rename(folder / "00.Png")
    cfg = make_config([{"path": str(folder)}])
    with pytest.raises(DatasetError) as caught:
        scan(cfg)
    assert caught.value.lines == (
        "dataset.dirs.0.path: sd-scripts reads only lower- or upper-case extensions (.png or .PNG) and "
        "would skip 00.Png; rename them",
    )
