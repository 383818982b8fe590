"""What a run produced: the LoRA of each epoch with its samples, state folders, and LoRA metadata."""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from kohya_wrap.train.layout import RunLayout

# sd-scripts' names: `<name>-<epoch:06d>.safetensors`; the last epoch is saved as `<name>.safetensors`.
_EPOCH_FILE = re.compile(r"^(?P<name>.+)-(?P<epoch>\d{6})\.safetensors$")
_STEP_FILE = re.compile(r"^(?P<name>.+)-step(?P<step>\d{8})\.safetensors$")
_SAMPLE = re.compile(r"^(?P<name>.+)_e(?P<epoch>\d{6})_(?P<index>\d{2})_(?P<stamp>\d{14})(?:_(?P<seed>\d+))?\.png$")
MAX_HEADER = 100 * 2**20


@dataclass(frozen=True)
class LoraFile:
    path: Path
    epoch: int | None  # None for step-numbered files
    step: int | None
    size: int
    final: bool
    samples: tuple[Path, ...]  # by prompt index


class MetadataError(ValueError):
    """The file is not a readable safetensors file."""


def read_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` table of a safetensors file (sd-scripts' `ss_*`, `sshs_*`, `modelspec.*` keys).

    Reads only the JSON header, so it is instant even for multi-GB files and needs no torch.
    """
    with path.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise MetadataError(f"{path}: too short to be a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_HEADER:
            raise MetadataError(f"{path}: header of {length} bytes is not a safetensors header")
        header = handle.read(length)
    try:
        doc = json.loads(header)
    except ValueError as exc:
        raise MetadataError(f"{path}: header is not JSON: {exc}") from None
    meta = doc.get("__metadata__", {}) if isinstance(doc, dict) else {}
    return {str(k): str(v) for k, v in meta.items()}


def samples_by_epoch(layout: RunLayout, name: str) -> dict[int, dict[int, Path]]:
    """epoch → prompt index → newest sample image."""
    found: dict[int, dict[int, tuple[str, Path]]] = {}
    if layout.samples_dir.is_dir():
        for path in layout.samples_dir.iterdir():
            match = _SAMPLE.match(path.name)
            if match is None or match["name"] != name:
                continue
            slot = found.setdefault(int(match["epoch"]), {})
            index = int(match["index"])
            if index not in slot or slot[index][0] < match["stamp"]:
                slot[index] = (match["stamp"], path)
    return {epoch: {i: p for i, (_, p) in slots.items()} for epoch, slots in found.items()}


def collect(layout: RunLayout, name: str, epochs: int) -> list[LoraFile]:
    """Every LoRA the run saved, in epoch order; the final file is the last epoch when it exists."""
    samples = samples_by_epoch(layout, name)
    files: list[LoraFile] = []
    if not layout.output_dir.is_dir():
        return files

    def sample_paths(epoch: int | None) -> tuple[Path, ...]:
        slots = samples.get(epoch, {}) if epoch is not None else {}
        return tuple(slots[i] for i in sorted(slots))

    for path in sorted(layout.output_dir.glob("*.safetensors")):
        size = path.stat().st_size
        if path.name == f"{name}.safetensors":
            files.append(LoraFile(path, epochs, None, size, True, sample_paths(epochs)))
        elif (match := _EPOCH_FILE.match(path.name)) and match["name"] == name:
            epoch = int(match["epoch"])
            files.append(LoraFile(path, epoch, None, size, False, sample_paths(epoch)))
        elif (match := _STEP_FILE.match(path.name)) and match["name"] == name:
            files.append(LoraFile(path, None, int(match["step"]), size, False, ()))
    return sorted(files, key=lambda f: (f.epoch is None, f.epoch or 0, f.step or 0))


def state_dirs(layout: RunLayout, name: str) -> list[Path]:
    if not layout.output_dir.is_dir():
        return []
    return sorted(p for p in layout.output_dir.glob(f"{name}*-state") if p.is_dir())
