"""Finding a run's LoRA files, samples, metadata, validation losses and the best epoch."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from kohya_wrap.review.outputs import (
    BestEpoch,
    MetadataError,
    best_epoch,
    collect,
    read_metadata,
    samples_by_epoch,
    validation_losses,
)
from kohya_wrap.train.events import EpochStarted, Validation, to_json
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.train.runs import RunRecord


def write_safetensors(path: Path, metadata: dict[str, str]) -> None:
    header = json.dumps({"__metadata__": metadata, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + b"\0\0\0\0")


@pytest.fixture
def layout(tmp_path: Path) -> RunLayout:
    layout = RunLayout(tmp_path / "run")
    layout.samples_dir.mkdir(parents=True)
    for name in ("zdm-000001.safetensors", "zdm-000002.safetensors", "zdm.safetensors", "other-000001.safetensors"):
        write_safetensors(layout.output_dir / name, {"ss_output_name": name})
    for sample in (
        "zdm_e000001_00_20260101120000_1.png",
        "zdm_e000001_01_20260101120001.png",
        "zdm_e000002_00_20260101130000_1.png",
        "zdm_e000002_00_20260101140000_1.png",
        "zdm_e000003_00_20260101150000_1.png",
        "zdm_000010_00_20260101150000_1.png",
    ):
        (layout.samples_dir / sample).write_bytes(b"png")
    (layout.output_dir / "zdm-000002-state").mkdir()
    (layout.output_dir / "zdm-state").mkdir()
    return layout


def test_collect_maps_the_final_file_to_the_last_epoch(layout: RunLayout) -> None:
    files = collect(layout, "zdm", epochs=3)
    assert [(f.path.name, f.epoch, f.final) for f in files] == [
        ("zdm-000001.safetensors", 1, False),
        ("zdm-000002.safetensors", 2, False),
        ("zdm.safetensors", 3, True),
    ]
    assert [p.name for p in files[0].samples] == [
        "zdm_e000001_00_20260101120000_1.png",
        "zdm_e000001_01_20260101120001.png",
    ]
    # The newest sample of an epoch and prompt wins (a resumed epoch renders again).
    assert [p.name for p in files[1].samples] == ["zdm_e000002_00_20260101140000_1.png"]
    assert files[0].size == (layout.output_dir / "zdm-000001.safetensors").stat().st_size


def test_samples_by_epoch_ignores_step_samples_and_other_names(layout: RunLayout) -> None:
    assert sorted(samples_by_epoch(layout, "zdm")) == [1, 2, 3]
    assert samples_by_epoch(layout, "nothing") == {}


def test_read_metadata(layout: RunLayout) -> None:
    assert read_metadata(layout.output_dir / "zdm.safetensors") == {"ss_output_name": "zdm.safetensors"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"abc", "too short to be a safetensors file"),
        (struct.pack("<Q", 2**40), "is not a safetensors header"),
        (struct.pack("<Q", 3) + b"{x}", "header is not JSON"),
    ],
)
def test_read_metadata_rejects_other_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(MetadataError, match=message):
        read_metadata(path)


def test_collect_without_output(tmp_path: Path) -> None:
    assert collect(RunLayout(tmp_path), "zdm", 2) == []


def validated_run(tmp_path: Path, saved: list[int], losses: list[tuple[int, float]], epochs: int = 4) -> RunLayout:
    """A run folder of `epochs` epochs whose LoRA files are `saved` and whose events hold `losses`."""
    layout = RunLayout(tmp_path / "run")
    layout.output_dir.mkdir(parents=True)
    record = RunRecord(
        status="finished",
        name="zdm",
        family="sd15",
        script="train_network.py",
        config_hash="0" * 16,
        total_steps=epochs * 10,
        epochs=epochs,
        created="2026-01-01T00:00:00+00:00",
    )
    layout.run_json.write_text(record.to_json(), "utf-8")
    for epoch in saved:
        name = "zdm.safetensors" if epoch == epochs else f"zdm-{epoch:06d}.safetensors"
        write_safetensors(layout.output_dir / name, {})
    lines = [to_json(EpochStarted(epoch=1, total=epochs), t=1.0)]
    lines += [to_json(Validation(epoch=e, step=e * 10, loss=v), t=float(e)) for e, v in losses]
    layout.events.write_text("\n".join(lines) + "\n", "utf-8")
    return layout


def test_best_epoch_is_the_lowest_validation_loss(tmp_path: Path) -> None:
    layout = validated_run(tmp_path, [1, 2, 3, 4], [(1, 0.2), (2, 0.15), (3, 0.151), (4, 0.16)])
    assert best_epoch(layout) == BestEpoch(
        epoch=2,
        validation_loss=0.15,
        lora=layout.output_dir / "zdm-000002.safetensors",
        reason="epoch 2 has the lowest validation loss (0.15) of the 4 saved epochs validated",
    )
    assert [v.loss for v in validation_losses(layout).values()] == [0.2, 0.15, 0.151, 0.16]


def test_best_epoch_needs_a_saved_lora_and_a_finite_loss(tmp_path: Path) -> None:
    layout = validated_run(tmp_path, [2, 4], [(1, 0.1), (2, 0.3), (3, math.nan), (4, 0.2)])
    best = best_epoch(layout)
    assert best is not None and (best.epoch, best.lora.name) == (4, "zdm.safetensors")
    assert best.reason == (
        "epoch 4 has the lowest validation loss (0.2) of the 2 saved epochs validated; epoch 1 scored lower (0.1) "
        "but its LoRA was not saved"
    )


def test_best_epoch_ties_go_to_the_earliest_and_one_epoch_is_said_so(tmp_path: Path) -> None:
    layout = validated_run(tmp_path, [1, 2, 3, 4], [(1, 0.3), (2, 0.25), (3, 0.25), (4, 0.25)])
    best = best_epoch(layout)
    assert best is not None and best.epoch == 2
    assert best.reason.endswith("; epochs 2, 3 and 4 tie, so the earliest is suggested")
    single = validated_run(tmp_path / "one", [4], [(2, 0.1), (4, 0.3)])
    best = best_epoch(single)
    assert best is not None and best.reason == (
        "epoch 4 is the only saved epoch with a validation loss (0.3); epoch 2 scored lower (0.1) but its LoRA was "
        "not saved"
    )


def test_a_repeated_epoch_counts_with_its_newest_pass(tmp_path: Path) -> None:
    # A resumed run validates again the epoch whose LoRA the interruption kept it from saving.
    layout = validated_run(tmp_path, [1, 2], [(1, 0.3), (2, 0.1), (2, 0.4)], epochs=2)
    best = best_epoch(layout)
    assert best is not None and (best.epoch, best.validation_loss) == (1, 0.3)


def test_no_validation_no_best_epoch(tmp_path: Path) -> None:
    assert best_epoch(validated_run(tmp_path, [1, 2, 3, 4], [])) is None
    assert best_epoch(validated_run(tmp_path / "nan", [1, 4], [(1, math.nan)])) is None
