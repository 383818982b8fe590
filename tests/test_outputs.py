"""Finding a run's LoRA files, samples and metadata."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from kohya_wrap.review.outputs import MetadataError, collect, read_metadata, samples_by_epoch, state_dirs
from kohya_wrap.train.layout import RunLayout


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


def test_state_dirs(layout: RunLayout) -> None:
    assert [p.name for p in state_dirs(layout, "zdm")] == ["zdm-000002-state", "zdm-state"]


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
