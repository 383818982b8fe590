"""What a run produced: the LoRA of each epoch with its samples and validation loss, state folders, metadata."""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from kohya_wrap.review.estimate import read_events
from kohya_wrap.train import events as ev
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.train.runs import read_record

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


def validation_losses(layout: RunLayout) -> dict[int, ev.Validation]:
    """epoch → its validation pass, from events.jsonl, in epoch order.

    An epoch validated twice (a resumed run repeats an epoch whose checkpoint was not saved yet)
    counts with its newest pass: that is the one its LoRA file comes from.
    """
    passes = {event.epoch: event for event, _ in read_events(layout) if isinstance(event, ev.Validation)}
    return dict(sorted(passes.items()))


@dataclass(frozen=True)
class BestEpoch:
    """The epoch suggested by validation loss, its LoRA file, and a one-line reason."""

    epoch: int
    validation_loss: float
    lora: Path
    reason: str


def best_epoch(layout: RunLayout) -> BestEpoch | None:
    """The saved epoch with the lowest validation loss; None when no saved epoch has one.

    Ties (sd-scripts prints 3 significant digits) go to the earliest epoch: less training, same loss.
    Raises RunError for a folder that is not a run.
    """
    record = read_record(layout)
    files = {f.epoch: f for f in collect(layout, record.name, record.epochs) if f.epoch is not None}
    losses = {epoch: v.loss for epoch, v in validation_losses(layout).items() if math.isfinite(v.loss)}
    saved = {epoch: loss for epoch, loss in losses.items() if epoch in files}
    if not saved:
        return None
    lowest = min(saved.values())
    tied = [epoch for epoch, loss in saved.items() if loss == lowest]
    epoch = tied[0]
    if len(saved) == 1:
        reason = f"epoch {epoch} is the only saved epoch with a validation loss ({lowest:.3g})"
    else:
        reason = (
            f"epoch {epoch} has the lowest validation loss ({lowest:.3g}) of the {len(saved)} saved epochs validated"
        )
    if len(tied) > 1:
        reason += f"; epochs {_numbers(tied)} tie, so the earliest is suggested"
    unsaved = {e: loss for e, loss in losses.items() if e not in files and loss < lowest}
    if unsaved:
        e = min(unsaved, key=lambda k: (unsaved[k], k))
        reason += f"; epoch {e} scored lower ({unsaved[e]:.3g}) but its LoRA was not saved"
    return BestEpoch(epoch, lowest, files[epoch].path, reason)


def _numbers(values: list[int]) -> str:
    return ", ".join(str(v) for v in values[:-1]) + f" and {values[-1]}"
