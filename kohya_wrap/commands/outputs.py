"""The `outputs` workflow: a run's LoRAs by epoch, with samples, validation loss, (on request) metadata."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kohya_wrap.errors import RunError
from kohya_wrap.review.outputs import (
    BestEpoch,
    LoraFile,
    MetadataError,
    best_epoch,
    collect,
    read_metadata,
    validation_losses,
)
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.train.runs import RunRecord, read_record


@dataclass(frozen=True)
class LoraOutput:
    """One saved LoRA; `metadata` is filled only when asked for, `metadata_error` when it cannot be read."""

    file: LoraFile
    metadata: dict[str, str] | None = None
    metadata_error: str | None = None
    validation_loss: float | None = None  # None when its epoch was not validated


@dataclass(frozen=True)
class RunOutputs:
    """A run's saved LoRAs in epoch order (step-numbered files last)."""

    layout: RunLayout
    record: RunRecord
    loras: tuple[LoraOutput, ...]
    validated: bool = False  # some epoch has a validation loss
    best: BestEpoch | None = None  # the suggested epoch, when a saved one has a validation loss


def outputs(run_dir: Path, metadata: bool = False) -> RunOutputs:
    """The LoRAs RUN_DIR saved so far; refused with one line when it is not a run folder."""
    layout = RunLayout(run_dir.resolve())
    record = read_record(layout)
    losses = {epoch: v.loss for epoch, v in validation_losses(layout).items()}
    loras = tuple(
        _output(lora, metadata, losses.get(lora.epoch) if lora.epoch is not None else None)
        for lora in collect(layout, record.name, record.epochs)
    )
    return RunOutputs(layout, record, loras, bool(losses), best_epoch(layout) if losses else None)


def best(run_dir: Path) -> BestEpoch:
    """The suggested epoch of RUN_DIR (lowest validation loss); refused with one line when it has none."""
    found = outputs(run_dir)
    if found.best is not None:
        return found.best
    if found.validated:
        raise RunError(
            f"outputs: {found.layout.root} has validation loss only for epochs whose LoRA was not saved (or it "
            "is NaN); see `kohya-wrap outputs` for each epoch"
        )
    raise RunError(
        f"outputs: {found.layout.root} has no validation loss, so there is no best epoch; train with "
        "validation.split above 0 (e.g. 0.1) to have one, or pick an epoch by its samples"
    )


def _output(lora: LoraFile, metadata: bool, validation_loss: float | None) -> LoraOutput:
    if not metadata:
        return LoraOutput(lora, validation_loss=validation_loss)
    try:
        return LoraOutput(lora, metadata=read_metadata(lora.path), validation_loss=validation_loss)
    except MetadataError as exc:
        return LoraOutput(lora, metadata_error=str(exc), validation_loss=validation_loss)
