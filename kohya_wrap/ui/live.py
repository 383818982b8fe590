"""What the web app shows of each run: run.json plus the progress at the end of events.jsonl."""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kohya_wrap.errors import RunError
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.train.runs import RunRecord, list_runs, read_record

if TYPE_CHECKING:
    from kohya_wrap.commands.queue import Progress


@dataclass(frozen=True)
class RunSummary:
    """One row of the runs page, and what its live updates carry."""

    id: str  # the run folder's name
    name: str
    status: str
    family: str
    created: str
    epoch: int | None
    epochs: int
    step: int | None
    total_steps: int
    loss: float | None
    eta_s: float | None
    reason: str | None
    outputs: int  # LoRA files and samples written so far: the report changed when this did

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _count_files(folder: Path) -> int:
    try:
        with os.scandir(folder) as entries:
            return sum(1 for entry in entries if entry.is_file())
    except OSError:
        return 0


class RunWatcher:
    """Reads a run's progress again only when its events.jsonl changed, so polling many runs stays cheap."""

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = runs_dir
        self._progress: dict[Path, tuple[tuple[int, int], Progress]] = {}
        self._lock = threading.Lock()

    def progress(self, layout: RunLayout) -> Progress:
        from kohya_wrap.commands.queue import read_progress

        try:
            stat = layout.events.stat()
            key = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            key = (-1, -1)
        with self._lock:
            cached = self._progress.get(layout.root)
            if cached is not None and cached[0] == key:
                return cached[1]
        progress = read_progress(layout.root)
        with self._lock:
            self._progress[layout.root] = (key, progress)
        return progress

    def summary(self, layout: RunLayout, record: RunRecord | None = None) -> RunSummary:
        """The live state of one run folder."""
        if record is None:
            record = read_record(layout)
        from kohya_wrap.commands.train import lost_trainer

        progress = self.progress(layout)
        lost = lost_trainer(layout, record)
        running = record.status == "running" and lost is None
        loss = progress.loss
        return RunSummary(
            id=layout.root.name,
            name=record.name,
            status=record.status,
            family=record.family,
            created=record.created,
            epoch=progress.epoch,
            epochs=record.epochs,
            step=progress.step,
            total_steps=record.total_steps,
            loss=loss if loss is not None and loss == loss else None,  # a NaN loss is shown as none
            eta_s=progress.eta_s if running else None,
            reason=lost or record.reason,
            outputs=_count_files(layout.output_dir) + _count_files(layout.samples_dir),
        )

    def all(self) -> list[RunSummary]:
        """Every readable run folder, newest first."""
        return [self.summary(layout, record) for layout, record in reversed(list_runs(self.runs_dir)) if record]

    def layout(self, run_id: str) -> RunLayout:
        """The run folder called `run_id` directly inside the runs folder (nothing else is reachable)."""
        if not run_id or "/" in run_id or "\\" in run_id or run_id.startswith(".") or "\x00" in run_id:
            raise RunError(f"run: no run called {run_id!r}")
        layout = RunLayout(self.runs_dir / run_id)
        if not layout.run_json.is_file() or not layout.root.resolve().is_relative_to(self.runs_dir.resolve()):
            raise RunError(f"run: no run called {run_id!r} in {self.runs_dir}")
        return layout
